//! Zero-copy wire formats and packet buffers for bitsgw.
//!
//! Every parser here takes untrusted bytes and returns an error rather than
//! panicking; every writer works in caller-owned buffers.

pub mod address_resolution;
pub mod buf;
pub mod checksum;
pub mod craft;
pub mod encap;
pub mod esp;
pub mod ether;
pub mod icmp;
pub mod ip;
pub mod mh;
pub mod mip6;
pub mod proto;
pub mod time;

pub use buf::PacketBuf;
pub use time::Timestamp;
