//! Traffic selectors (RFC 4301 4.4.1.1) and the flow key a packet is
//! matched on.
//!
//! Addresses are held as `u128` (IPv4 in the low 32 bits) with a separate
//! family, so that a match is a few integer comparisons.

use crate::sa::Direction;
use bitsgw_wire::ip::{IpMeta, IpVersion};
use std::net::IpAddr;

/// IP next-layer protocol numbers: the one table, in `bitsgw-wire`.
pub use bitsgw_wire::proto;

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// An IP address as a family and a `u128` (IPv4 in the low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    /// The family.
    pub family: Family,
    /// The address bits.
    pub bits: u128,
}

impl From<IpAddr> for Addr {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Addr {
                family: Family::V4,
                bits: u32::from(a) as u128,
            },
            IpAddr::V6(a) => Addr {
                family: Family::V6,
                bits: u128::from(a),
            },
        }
    }
}

impl From<Addr> for IpAddr {
    fn from(a: Addr) -> Self {
        match a.family {
            Family::V4 => IpAddr::V4((a.bits as u32).into()),
            Family::V6 => IpAddr::V6(a.bits.into()),
        }
    }
}

impl core::fmt::Display for Addr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        IpAddr::from(*self).fmt(f)
    }
}

/// An address selector: any address of either family, or an inclusive
/// range of one family (a single address and a prefix are ranges too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrSel {
    /// Any address (RFC 4301 "ANY"), either family.
    Any,
    /// The inclusive range `lo..=hi` of `family`.
    Range {
        /// The family.
        family: Family,
        /// Lowest address in the range.
        lo: u128,
        /// Highest address in the range.
        hi: u128,
    },
}

impl AddrSel {
    /// A single address.
    pub fn single(a: IpAddr) -> Self {
        let a = Addr::from(a);
        AddrSel::Range {
            family: a.family,
            lo: a.bits,
            hi: a.bits,
        }
    }

    /// The addresses of `a/len`; `None` if `len` exceeds the family's width.
    pub fn prefix(a: IpAddr, len: u8) -> Option<Self> {
        let a = Addr::from(a);
        let width: u32 = match a.family {
            Family::V4 => 32,
            Family::V6 => 128,
        };
        let len = u32::from(len);
        if len > width {
            return None;
        }
        let host_bits = width - len;
        let host_mask: u128 = if host_bits == 0 {
            0
        } else if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let lo = a.bits & !host_mask;
        Some(AddrSel::Range {
            family: a.family,
            lo,
            hi: lo | host_mask,
        })
    }

    /// An inclusive range; `None` if the families differ or `lo > hi`.
    pub fn range(lo: IpAddr, hi: IpAddr) -> Option<Self> {
        let (lo, hi) = (Addr::from(lo), Addr::from(hi));
        (lo.family == hi.family && lo.bits <= hi.bits).then_some(AddrSel::Range {
            family: lo.family,
            lo: lo.bits,
            hi: hi.bits,
        })
    }

    /// Whether the selector covers `a`.
    #[inline]
    pub fn contains(&self, a: Addr) -> bool {
        match *self {
            AddrSel::Any => true,
            AddrSel::Range { family, lo, hi } => family == a.family && lo <= a.bits && a.bits <= hi,
        }
    }

    /// The family this selector is limited to, if any.
    pub fn family(&self) -> Option<Family> {
        match self {
            AddrSel::Any => None,
            AddrSel::Range { family, .. } => Some(*family),
        }
    }

    /// Whether every address `other` covers is also covered by `self`.
    pub fn covers(&self, other: &AddrSel) -> bool {
        match (self, other) {
            (AddrSel::Any, _) => true,
            (AddrSel::Range { .. }, AddrSel::Any) => false,
            (
                AddrSel::Range { family, lo, hi },
                AddrSel::Range {
                    family: f2,
                    lo: l2,
                    hi: h2,
                },
            ) => family == f2 && lo <= l2 && h2 <= hi,
        }
    }
}

impl core::fmt::Display for AddrSel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            AddrSel::Any => f.write_str("any"),
            AddrSel::Range { family, lo, hi } => {
                let show = |bits| Addr { family, bits };
                if lo == hi {
                    return write!(f, "{}", show(lo));
                }
                let width = if family == Family::V4 { 32 } else { 128 };
                let span = hi - lo;
                // A prefix: span + 1 is a power of two and lo is aligned to it.
                if span.checked_add(1).is_some_and(|n| n.is_power_of_two()) && lo & span == 0 {
                    let host_bits = (span + 1).trailing_zeros();
                    return write!(f, "{}/{}", show(lo), width - host_bits);
                }
                if span == u128::MAX {
                    return write!(f, "{}/0", show(lo));
                }
                write!(f, "{}-{}", show(lo), show(hi))
            }
        }
    }
}

/// An inclusive range of 8- or 16-bit values (ports, ICMP type and code,
/// MH type). The full range means ANY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Range16 {
    /// Lowest value.
    pub lo: u16,
    /// Highest value.
    pub hi: u16,
}

impl Range16 {
    /// Every 16-bit value.
    pub const ANY16: Range16 = Range16 { lo: 0, hi: 0xffff };
    /// Every 8-bit value.
    pub const ANY8: Range16 = Range16 { lo: 0, hi: 0xff };

    /// A single value.
    pub const fn single(v: u16) -> Self {
        Range16 { lo: v, hi: v }
    }

    /// Whether the range covers `v`.
    #[inline]
    pub fn contains(&self, v: u16) -> bool {
        self.lo <= v && v <= self.hi
    }

    /// Whether the range is ANY for a field of `max`.
    #[inline]
    pub fn is_any(&self, max: u16) -> bool {
        self.lo == 0 && self.hi == max
    }
}

/// Next-layer fields of a packet, as far as they could be read.
///
/// RFC 4301 4.4.1: when the next-layer header is not available (a
/// non-initial fragment, or an encrypted payload) the fields are OPAQUE and
/// only an ANY selector matches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextLayer {
    /// Not available (OPAQUE).
    Opaque,
    /// A protocol without selector fields (or one we do not look into).
    None,
    /// TCP, UDP or SCTP ports, as local and remote.
    Ports {
        /// Local port.
        local: u16,
        /// Remote port.
        remote: u16,
    },
    /// ICMP or ICMPv6 type and code (RFC 4301 4.4.1.1).
    Icmp {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
    },
    /// Mobility Header type (RFC 4301 4.4.1.1, RFC 6275 6.1).
    Mh {
        /// MH type.
        ty: u8,
    },
}

/// What a packet is matched on: local and remote address, next-layer
/// protocol and its fields, from the point of view of this node (outbound:
/// local = source; inbound: local = destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Local address.
    pub local: Addr,
    /// Remote address.
    pub remote: Addr,
    /// Next-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Next-layer fields.
    pub next: NextLayer,
}

impl FlowKey {
    /// The flow key of a parsed packet as the SPD of `direction` sees it
    /// (RFC 4301 4.4.1.1): outbound, the source is local; inbound, the
    /// destination. Next-layer fields of a later fragment, or of a header
    /// too short to hold them, are OPAQUE.
    pub fn of_packet(pkt: &[u8], meta: &IpMeta, direction: Direction) -> FlowKey {
        let addr = |at: core::ops::Range<usize>| {
            let bytes = pkt.get(at).unwrap_or(&[]);
            match meta.version {
                IpVersion::V4 => {
                    <[u8; 4]>::try_from(bytes).map_or(IpAddr::from([0u8; 4]), IpAddr::from)
                }
                IpVersion::V6 => {
                    <[u8; 16]>::try_from(bytes).map_or(IpAddr::from([0u8; 16]), IpAddr::from)
                }
            }
        };
        let (src, dst) = (
            Addr::from(addr(meta.src_range())),
            Addr::from(addr(meta.dst_range())),
        );
        let outbound = direction == Direction::Outbound;
        let upper = pkt.get(meta.header_len..meta.total_len).unwrap_or(&[]);
        let next = match (meta.is_later_fragment(), meta.proto, upper) {
            (true, _, _) => NextLayer::Opaque,
            (_, proto::TCP | proto::UDP | proto::SCTP, [a, b, c, d, ..]) => {
                let (sport, dport) = (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]));
                let (local, remote) = if outbound {
                    (sport, dport)
                } else {
                    (dport, sport)
                };
                NextLayer::Ports { local, remote }
            }
            (_, proto::ICMP | proto::ICMPV6, [ty, code, ..]) => NextLayer::Icmp {
                ty: *ty,
                code: *code,
            },
            // RFC 6275 6.1.1: Payload Proto, Header Len, MH Type.
            (_, proto::MH, [_, _, ty, ..]) => NextLayer::Mh { ty: *ty },
            (
                _,
                proto::TCP | proto::UDP | proto::SCTP | proto::ICMP | proto::ICMPV6 | proto::MH,
                _,
            ) => NextLayer::Opaque,
            _ => NextLayer::None,
        };
        let (local, remote) = if outbound { (src, dst) } else { (dst, src) };
        FlowKey {
            local,
            remote,
            proto: meta.proto,
            next,
        }
    }
}

/// Protocol selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtoSel {
    /// Any protocol.
    Any,
    /// Exactly this protocol number.
    Is(u8),
}

/// One set of traffic selectors (RFC 4301 4.4.1.1), the condition part of an
/// SPD entry and the selectors of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Selector {
    /// Local address.
    pub local: AddrSel,
    /// Remote address.
    pub remote: AddrSel,
    /// Next-layer protocol.
    pub proto: ProtoSel,
    /// Local port (TCP, UDP, SCTP).
    pub local_ports: Range16,
    /// Remote port (TCP, UDP, SCTP).
    pub remote_ports: Range16,
    /// ICMP/ICMPv6 type.
    pub icmp_type: Range16,
    /// ICMP/ICMPv6 code.
    pub icmp_code: Range16,
    /// Mobility Header type.
    pub mh_type: Range16,
}

impl Default for Selector {
    fn default() -> Self {
        Selector::ANY
    }
}

impl Selector {
    /// Matches every packet.
    pub const ANY: Selector = Selector {
        local: AddrSel::Any,
        remote: AddrSel::Any,
        proto: ProtoSel::Any,
        local_ports: Range16::ANY16,
        remote_ports: Range16::ANY16,
        icmp_type: Range16::ANY8,
        icmp_code: Range16::ANY8,
        mh_type: Range16::ANY8,
    };

    /// Whether the selector constrains the next-layer fields at all.
    fn next_layer_is_any(&self) -> bool {
        self.local_ports.is_any(0xffff)
            && self.remote_ports.is_any(0xffff)
            && self.icmp_type.is_any(0xff)
            && self.icmp_code.is_any(0xff)
            && self.mh_type.is_any(0xff)
    }

    /// Whether a packet with `key` matches (RFC 4301 4.4.1.1). A selector
    /// that names ports, ICMP type/code or MH type matches only packets
    /// whose next-layer header carries those fields.
    #[inline]
    pub fn matches(&self, key: &FlowKey) -> bool {
        if !self.local.contains(key.local) || !self.remote.contains(key.remote) {
            return false;
        }
        if let ProtoSel::Is(p) = self.proto {
            if p != key.proto {
                return false;
            }
        }
        match key.next {
            NextLayer::Ports { local, remote } => {
                self.local_ports.contains(local)
                    && self.remote_ports.contains(remote)
                    && self.icmp_type.is_any(0xff)
                    && self.icmp_code.is_any(0xff)
                    && self.mh_type.is_any(0xff)
            }
            NextLayer::Icmp { ty, code } => {
                self.icmp_type.contains(ty.into())
                    && self.icmp_code.contains(code.into())
                    && self.local_ports.is_any(0xffff)
                    && self.remote_ports.is_any(0xffff)
                    && self.mh_type.is_any(0xff)
            }
            NextLayer::Mh { ty } => {
                self.mh_type.contains(ty.into())
                    && self.local_ports.is_any(0xffff)
                    && self.remote_ports.is_any(0xffff)
                    && self.icmp_type.is_any(0xff)
                    && self.icmp_code.is_any(0xff)
            }
            NextLayer::Opaque | NextLayer::None => self.next_layer_is_any(),
        }
    }

    /// Whether every packet this selector matches is also matched by
    /// `earlier` (so an entry with this selector after `earlier` can never
    /// be reached). Conservative: may answer `false` for some shadowed
    /// selectors, never `true` for a reachable one.
    pub fn is_shadowed_by(&self, earlier: &Selector) -> bool {
        let proto_covered = match (earlier.proto, self.proto) {
            (ProtoSel::Any, _) => true,
            (ProtoSel::Is(a), ProtoSel::Is(b)) => a == b,
            (ProtoSel::Is(_), ProtoSel::Any) => false,
        };
        let range_covers = |e: Range16, s: Range16| e.lo <= s.lo && s.hi <= e.hi;
        earlier.local.covers(&self.local)
            && earlier.remote.covers(&self.remote)
            && proto_covered
            && range_covers(earlier.local_ports, self.local_ports)
            && range_covers(earlier.remote_ports, self.remote_ports)
            && range_covers(earlier.icmp_type, self.icmp_type)
            && range_covers(earlier.icmp_code, self.icmp_code)
            && range_covers(earlier.mh_type, self.mh_type)
        // A selector with next-layer constraints never matches OPAQUE
        // packets, an unconstrained one does; coverage of field ranges
        // already implies this, so nothing more to check.
    }

    /// The mirror image: local and remote swapped (an outbound SPD entry's
    /// selector seen from the peer, or the inbound twin of an outbound SA).
    pub fn mirrored(&self) -> Selector {
        Selector {
            local: self.remote,
            remote: self.local,
            local_ports: self.remote_ports,
            remote_ports: self.local_ports,
            ..*self
        }
    }
}

impl core::fmt::Display for Range16 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl core::fmt::Display for Selector {
    /// `local A remote B proto P` and whichever next-layer selectors are
    /// not ANY.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "local {} remote {}", self.local, self.remote)?;
        match self.proto {
            ProtoSel::Any => f.write_str(" proto any")?,
            ProtoSel::Is(p) => write!(f, " proto {}", proto_name(p))?,
        }
        if !self.local_ports.is_any(0xffff) {
            write!(f, " local_port {}", self.local_ports)?;
        }
        if !self.remote_ports.is_any(0xffff) {
            write!(f, " remote_port {}", self.remote_ports)?;
        }
        if !self.icmp_type.is_any(0xff) {
            write!(f, " icmp_type {}", self.icmp_type)?;
        }
        if !self.icmp_code.is_any(0xff) {
            write!(f, " icmp_code {}", self.icmp_code)?;
        }
        if !self.mh_type.is_any(0xff) {
            write!(f, " mh_type {}", self.mh_type)?;
        }
        Ok(())
    }
}

/// A protocol's usual name, or its number.
pub fn proto_name(p: u8) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow;
    Cow::Borrowed(match p {
        proto::ICMP => "icmp",
        proto::IPV4 => "ipip",
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::IPV6 => "ipv6",
        proto::ESP => "esp",
        proto::AH => "ah",
        proto::ICMPV6 => "icmpv6",
        proto::SCTP => "sctp",
        proto::MH => "mh",
        other => return Cow::Owned(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(local: &str, remote: &str, proto: u8, next: NextLayer) -> FlowKey {
        FlowKey {
            local: ip(local).into(),
            remote: ip(remote).into(),
            proto,
            next,
        }
    }

    /// A UDP packet's ports are local and remote as the direction says;
    /// an MH packet is keyed on its type; a later fragment is OPAQUE.
    #[test]
    fn flow_key_of_a_packet_follows_direction() {
        let udp =
            bitsgw_wire::craft::udp_packet(ip("2001:db8:1::100"), ip("2001:db8:9::1"), 5000, 53, 8);
        let meta = bitsgw_wire::ip::parse(&udp).unwrap();
        assert_eq!(
            FlowKey::of_packet(&udp, &meta, Direction::Outbound),
            key(
                "2001:db8:1::100",
                "2001:db8:9::1",
                proto::UDP,
                NextLayer::Ports {
                    local: 5000,
                    remote: 53
                }
            )
        );
        assert_eq!(
            FlowKey::of_packet(&udp, &meta, Direction::Inbound),
            key(
                "2001:db8:9::1",
                "2001:db8:1::100",
                proto::UDP,
                NextLayer::Ports {
                    local: 53,
                    remote: 5000
                }
            )
        );
        let mh = bitsgw_wire::craft::mh_packet(ip("2001:db8:1::100"), ip("2001:db8:1::1"), 5);
        let meta = bitsgw_wire::ip::parse(&mh).unwrap();
        assert_eq!(
            FlowKey::of_packet(&mh, &meta, Direction::Outbound).next,
            NextLayer::Mh { ty: 5 }
        );
        let mut later = bitsgw_wire::ip::parse(&udp).unwrap();
        later.frag = Some(bitsgw_wire::ip::FragInfo {
            offset: 8,
            more: false,
            ident: 1,
            header_at: 40,
        });
        assert_eq!(
            FlowKey::of_packet(&udp, &later, Direction::Outbound).next,
            NextLayer::Opaque
        );
    }

    #[test]
    fn prefix_and_range_bounds() {
        let p = AddrSel::prefix(ip("192.0.2.77"), 24).unwrap();
        assert!(p.contains(ip("192.0.2.0").into()));
        assert!(p.contains(ip("192.0.2.255").into()));
        assert!(!p.contains(ip("192.0.3.0").into()));
        assert!(!p.contains(ip("2001:db8::1").into()));
        assert_eq!(p.to_string(), "192.0.2.0/24");
        let all6 = AddrSel::prefix(ip("2001:db8::1"), 0).unwrap();
        assert!(all6.contains(ip("::").into()));
        assert!(!all6.contains(ip("0.0.0.0").into()));
        assert!(AddrSel::prefix(ip("192.0.2.1"), 33).is_none());
        assert!(AddrSel::range(ip("192.0.2.9"), ip("192.0.2.1")).is_none());
        assert!(AddrSel::range(ip("192.0.2.1"), ip("2001:db8::1")).is_none());
        let r = AddrSel::range(ip("192.0.2.1"), ip("192.0.2.9")).unwrap();
        assert_eq!(r.to_string(), "192.0.2.1-192.0.2.9");
    }

    #[test]
    fn mh_type_selector_matches_only_mh_of_that_type() {
        // RFC 4301 4.4.1.1: the MH type is a selector of its own.
        let bu = Selector {
            proto: ProtoSel::Is(proto::MH),
            mh_type: Range16::single(5),
            ..Selector::ANY
        };
        let k = |ty| {
            key(
                "2001:db8::1",
                "2001:db8::2",
                proto::MH,
                NextLayer::Mh { ty },
            )
        };
        assert!(bu.matches(&k(5)));
        assert!(!bu.matches(&k(6)));
        let opaque = key("2001:db8::1", "2001:db8::2", proto::MH, NextLayer::Opaque);
        assert!(!bu.matches(&opaque));
        assert!(Selector::ANY.matches(&opaque));
    }

    #[test]
    fn ports_and_icmp_fields() {
        let web = Selector {
            proto: ProtoSel::Is(proto::TCP),
            remote_ports: Range16::single(443),
            ..Selector::ANY
        };
        let tcp = |l, r| {
            key(
                "192.0.2.1",
                "198.51.100.1",
                proto::TCP,
                NextLayer::Ports {
                    local: l,
                    remote: r,
                },
            )
        };
        assert!(web.matches(&tcp(40000, 443)));
        assert!(!web.matches(&tcp(443, 80)));
        let echo = Selector {
            proto: ProtoSel::Is(proto::ICMP),
            icmp_type: Range16::single(8),
            ..Selector::ANY
        };
        assert!(echo.matches(&key(
            "192.0.2.1",
            "198.51.100.1",
            proto::ICMP,
            NextLayer::Icmp { ty: 8, code: 0 }
        )));
        assert!(!echo.matches(&key(
            "192.0.2.1",
            "198.51.100.1",
            proto::ICMP,
            NextLayer::Icmp { ty: 0, code: 0 }
        )));
    }

    #[test]
    fn shadowing() {
        let wide = Selector {
            local: AddrSel::prefix(ip("2001:db8::"), 32).unwrap(),
            ..Selector::ANY
        };
        let narrow = Selector {
            local: AddrSel::single(ip("2001:db8::5")),
            proto: ProtoSel::Is(proto::MH),
            ..Selector::ANY
        };
        assert!(narrow.is_shadowed_by(&wide));
        assert!(!wide.is_shadowed_by(&narrow));
        assert_eq!(narrow.mirrored().remote, narrow.local);
    }
}
