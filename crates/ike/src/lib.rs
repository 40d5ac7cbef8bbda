//! bitsgw's IKEv2 (RFC 7296) core, sans-IO.
#![forbid(unsafe_code)]

pub mod wire;
