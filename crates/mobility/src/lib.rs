//! bitsgw's Dual-Stack Mobile IPv6 stage (RFC 6275, RFC 5555, protected as
//! RFC 3776 and RFC 4877 say), built around an IPsec stage that is not
//! changed for it, as the seed draft (draft-laganier-mext-dsmipv6-ipsec)
//! sets out:
//!
//! - the **protocol module**, above IPsec ([`ha::HomeAgent`] and
//!   [`mn::MobileNode`]'s `handle_delivered` / `poll_transmit`): it
//!   originates and consumes Mobility Header and Mobile Prefix messages and
//!   keeps the binding cache or binding update list;
//! - the **tunnel stage**, below IPsec ([`tunnel`], reached through
//!   `handle_network` / `handle_protected`): encapsulation, the Home
//!   Address option and type 2 routing header, HoA <-> CoA re-addressing,
//!   NAT detection bookkeeping, and classification of ESP packets through
//!   the IPsec query API ([`bitsgw_ipsec_query`]). That crate is the only
//!   one of the IPsec stage this crate depends on, so nothing else of the
//!   stage can be named here.
//!
//! Packet path (DESIGN.md): outbound, host -> IPsec -> `handle_protected`
//! -> network; inbound, network -> `handle_network` -> IPsec ->
//! `handle_delivered` -> host. The modules are sans-IO: they take
//! `(packet, now)` and never read a clock.

pub mod binding;
pub mod classify;
pub mod counters;
pub mod ha;
pub mod home_link;
pub mod keying;
pub mod mn;
pub mod packet;
pub mod seq;
pub mod tunnel;
