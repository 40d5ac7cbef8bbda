//! bitsgw's packet pipeline: the stages of DESIGN.md's packet path wired
//! between a host-side and a network-side port, with counters for every
//! frame and every drop, and trace taps at the stage boundaries.
//!
//! [`Gateway`] is the sans-IO core for the `gateway` role (plain BITS
//! IPsec, no mobility): frames in, frames out, `now` handed in.
//! [`replay`] runs it over captures, deterministically.

pub mod counters;
pub mod endpoint;
pub mod gateway;
pub mod layer2;
pub mod lease;
pub mod neighbor;
pub mod port;
pub mod replay;
pub mod routed;
pub mod runner;

pub use bitsgw_wire::ether::LinkType;
pub use counters::{PipelineCounters, PipelineDrop};
pub use endpoint::LocalEndpoint;
pub use gateway::{FrameWalk, Gateway, Mobility, NoTap, Outcome, Side, Tap, TapPoint};
pub use layer2::{Layer2Drops, Layer2Policy};
pub use lease::{Lease, LeaseError, LeaseKeeper, LeaseServer};
pub use routed::{Routed, RoutedConfig};
