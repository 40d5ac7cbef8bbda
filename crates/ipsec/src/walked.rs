//! Parse once: what an earlier layer already found out about a packet,
//! handed to the stage with the packet so it is not walked or classified
//! again.
//!
//! A receive thread walks each frame's IP header to dispatch it and, for
//! an outbound frame, classifies its flow by the SPD to find the owner of
//! its SAs. [`Walked`] carries both to the worker's stage
//! ([`crate::IpsecStage::handle_outbound_walked`]). A decision made against
//! another SPD than the stage's (a control applied to the dispatcher's map
//! before the worker) is recognised by the SPD's fingerprint and made anew.

use crate::selector::FlowKey;
use crate::spd::Spd;
use bitsgw_wire::ip::IpMeta;

/// A packet's walk and, outbound, its SPD decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    /// [`bitsgw_wire::ip::parse`] of the packet as it is in its buffer.
    pub meta: IpMeta,
    /// Outbound: the SPD entry its flow matched.
    pub spd: Option<SpdDecision>,
}

/// Which entry of an SPD a flow matched first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpdDecision {
    /// The fingerprint of the SPD it was made against ([`Spd::fingerprint`]).
    pub spd: u64,
    /// The entry's position; `None` when no entry matched.
    pub entry: Option<usize>,
}

impl SpdDecision {
    /// Classifies `key` against `spd` (uncached, uncounted).
    pub fn classify(spd: &Spd, key: &FlowKey) -> Self {
        SpdDecision {
            spd: spd.fingerprint(),
            entry: spd.lookup(key),
        }
    }
}

/// How often a stage (or a receive thread) walked a packet's IP header and
/// classified a flow by the SPD, so tests can check that each happens once
/// per packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseCounts {
    /// IP header walks of packets as received (not of packets the stage
    /// made itself: a bundle's intermediate ESP packets, decrypted inner
    /// packets).
    pub ip_walks: u64,
    /// SPD classifications of a flow.
    pub spd_classifications: u64,
}

impl ParseCounts {
    /// Adds `other`.
    pub fn merge(&mut self, other: &ParseCounts) {
        self.ip_walks += other.ip_walks;
        self.spd_classifications += other.spd_classifications;
    }
}
