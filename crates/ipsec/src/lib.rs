//! bitsgw's bump-in-the-stack IPsec stage (RFC 4301): the security policy
//! database, the security association database, the ESP engine (RFC 4303,
//! RFC 3948) and the read-only query API the mobility stage uses.
//!
//! The stage is sans-IO: it takes packets and `now`, and returns what to do
//! ([`stage::IpsecStage`]).

pub mod anti_replay;
pub mod config;
pub mod counters;
pub mod crypto;
pub mod flow;
pub mod flow_cache;
pub mod gcm_choice;
pub mod ownership;
pub mod query;
pub mod sa;
pub mod sad;
pub mod spd;
pub mod spd_index;
pub mod stage;
pub mod walked;

pub use bitsgw_ipsec_query::selector;
pub use counters::DropReason;
pub use stage::{AcquireSignal, Disposition, Event, IpsecStage, LeaseRequest, StageConfig};
