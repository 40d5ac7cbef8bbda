//! bitsgw's IKEv2 (RFC 7296) core, sans-IO: datagrams and `now` in,
//! datagrams, events (CHILD_SAs to install and remove, IKE SAs up and down)
//! and the next deadline out. See README.md for what is implemented and
//! what is not yet.
#![forbid(unsafe_code)]

pub mod certs;
pub mod config;
pub mod crypto;
mod endpoint;
pub mod event;
pub mod names;
pub mod suite;
pub mod wire;

pub use bitsgw_wire::Timestamp;
pub use config::{
    Authentication, ChildConfig, EndpointConfig, Identity, Lifetimes, Mode, PeerConfig, Retransmit,
};
pub use endpoint::{Endpoint, IkeError};
pub use event::{
    ChildSaEstablished, Counters, DownReason, DropReason, Event, IkeSaId, Transmit, NAT_KEEPALIVE,
};
