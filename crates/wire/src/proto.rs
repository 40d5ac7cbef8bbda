//! IP protocol and IPv6 next-header numbers (IANA "Assigned Internet
//! Protocol Numbers"): the one table every part of bitsgw names them from.

/// ICMP for IPv4.
pub const ICMP: u8 = 1;
/// IPv4-in-IP encapsulation.
pub const IPV4: u8 = 4;
/// TCP.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;
/// IPv6 encapsulation.
pub const IPV6: u8 = 41;
/// IPv6 Routing header.
pub const IPV6_ROUTING: u8 = 43;
/// IPv6 Fragment header.
pub const IPV6_FRAGMENT: u8 = 44;
/// Encapsulating Security Payload.
pub const ESP: u8 = 50;
/// Authentication Header.
pub const AH: u8 = 51;
/// ICMPv6.
pub const ICMPV6: u8 = 58;
/// No next header (RFC 8200); dummy ESP packets (RFC 4303 2.6).
pub const NO_NEXT_HEADER: u8 = 59;
/// IPv6 Destination Options header.
pub const IPV6_DEST_OPTS: u8 = 60;
/// IPv6 Hop-by-Hop Options header.
pub const IPV6_HOP_BY_HOP: u8 = 0;
/// SCTP.
pub const SCTP: u8 = 132;
/// Mobility Header (RFC 6275 6.1).
pub const MH: u8 = 135;
