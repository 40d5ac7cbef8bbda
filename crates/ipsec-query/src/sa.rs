//! What the query API says about an SA besides its selectors: its
//! direction, mode, UDP encapsulation and lifecycle state (RFC 4301
//! 4.4.2.1), as plain values.

use crate::selector::Addr;

/// Direction of an SA (or of an SPD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received traffic.
    Inbound,
    /// Sent traffic.
    Outbound,
}

impl Direction {
    /// "inbound" or "outbound".
    pub fn name(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// ESP mode (RFC 4301 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Transport mode: ESP between the packet's own source and destination.
    Transport,
    /// Tunnel mode between two endpoints (local = this side).
    Tunnel {
        /// This side's endpoint (outer source when sending).
        local: Addr,
        /// The peer's endpoint (outer destination when sending).
        remote: Addr,
    },
}

impl core::fmt::Display for Mode {
    /// `transport` or `tunnel LOCAL -> REMOTE`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Mode::Transport => f.write_str("transport"),
            Mode::Tunnel { local, remote } => write!(f, "tunnel {local} -> {remote}"),
        }
    }
}

/// UDP encapsulation of ESP (RFC 3948).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpEncap {
    /// This side's UDP port.
    pub local_port: u16,
    /// The peer's UDP port (the NAT's mapped port when behind one).
    pub remote_port: u16,
}

/// Lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaState {
    /// In use.
    Active,
    /// Soft lifetime reached: still in use, replacement wanted.
    SoftExpired,
    /// No longer usable (hard lifetime, sequence overflow); removed soon.
    Stopped,
}
