//! ICMP (RFC 792) and ICMPv6 (RFC 4443, RFC 4861) message types and the
//! Neighbor Discovery option types bitsgw reads or writes (IANA "ICMP
//! Type Numbers", "ICMPv6 Parameters"): the one table every part of bitsgw
//! names them from. The Mobile IPv6 ICMPv6 types are in [`crate::mip6`].

/// ICMP Destination Unreachable (RFC 792).
pub const V4_DEST_UNREACHABLE: u8 = 3;
/// Destination Unreachable code 4: fragmentation needed and DF set
/// (RFC 792, RFC 1191).
pub const V4_CODE_FRAG_NEEDED: u8 = 4;
/// ICMP Source Quench (RFC 792, deprecated by RFC 6633), an error.
pub const V4_SOURCE_QUENCH: u8 = 4;
/// ICMP Redirect (RFC 792), an error.
pub const V4_REDIRECT: u8 = 5;
/// ICMP Echo Request.
pub const V4_ECHO_REQUEST: u8 = 8;
/// ICMP Time Exceeded (RFC 792), an error.
pub const V4_TIME_EXCEEDED: u8 = 11;
/// ICMP Parameter Problem (RFC 792), an error.
pub const V4_PARAMETER_PROBLEM: u8 = 12;

/// ICMPv6 Packet Too Big (RFC 4443 3.2).
pub const V6_PACKET_TOO_BIG: u8 = 2;
/// ICMPv6 types below this are errors (RFC 4443 2.1).
pub const V6_FIRST_INFORMATIONAL: u8 = 128;
/// ICMPv6 Echo Request (RFC 4443 4.1).
pub const V6_ECHO_REQUEST: u8 = 128;
/// Router Solicitation (RFC 4861 4.1).
pub const V6_ROUTER_SOLICITATION: u8 = 133;
/// Neighbor Solicitation (RFC 4861 4.3).
pub const V6_NEIGHBOR_SOLICITATION: u8 = 135;
/// Neighbor Advertisement (RFC 4861 4.4).
pub const V6_NEIGHBOR_ADVERTISEMENT: u8 = 136;

/// Neighbor Discovery option: Source Link-Layer Address (RFC 4861 4.6.1).
pub const ND_OPT_SOURCE_LL: u8 = 1;
/// Neighbor Discovery option: Target Link-Layer Address (RFC 4861 4.6.1).
pub const ND_OPT_TARGET_LL: u8 = 2;
