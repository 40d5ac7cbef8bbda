//! bitsgw's bump-in-the-stack IPsec stage (RFC 4301): the security policy
//! database, the security association database, the ESP engine (RFC 4303,
//! RFC 3948) and the read-only query API the mobility stage uses.
//!
//! The stage is sans-IO: it takes packets and `now`, and returns what to do.

pub mod frag;
pub mod selector;
