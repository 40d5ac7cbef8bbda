//! The read-only query API: the contract between the IPsec stage and the
//! mobility stage around it (the seed draft's "DSMIPv6-IPsec API").
//!
//! It answers two questions, cheaply enough to ask per packet, and lets
//! nobody change IPsec state through it:
//! - outbound: for an SPD entry (or a flow, such as "MH BU from HoA to
//!   HA"), which SA protects it now, and with which SPI;
//! - inbound: for an SPI, which SA it is, its traffic selectors and the SPD
//!   entries it serves.
//!
//! A generation number changes whenever the answers may change (an SA
//! installed, removed or replaced; the SPD reloaded), so callers may cache.
//!
//! ```
//! use bitsgw_ipsec::query::Query;
//! use bitsgw_ipsec::sa::Direction;
//!
//! /// Req #3 of the seed: is this outbound ESP packet the Binding Update?
//! fn is_binding_update(q: &Query<'_>, bu_entry: &str, esp_spi: u32) -> bool {
//!     q.spd_entry(Direction::Outbound, bu_entry)
//!         .and_then(|e| q.outbound_sa(e))
//!         .is_some_and(|sa| sa.spi == esp_spi)
//! }
//! ```

use crate::sa::{Direction, Mode, SaState, UdpEncap};
use crate::sad::SaId;
use crate::selector::{FlowKey, Selector};
use crate::spd::{Action, SpdEntry, SpdEntryId};
use crate::stage::IpsecStage;

/// A read-only view of the IPsec stage.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    stage: &'a IpsecStage,
}

/// What the query API tells about an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaInfo<'a> {
    /// The SA.
    pub id: SaId,
    /// Its name.
    pub name: &'a str,
    /// Its SPI.
    pub spi: u32,
    /// Its direction.
    pub direction: Direction,
    /// Its mode (with tunnel endpoints).
    pub mode: Mode,
    /// UDP encapsulation, if any.
    pub udp_encap: Option<UdpEncap>,
    /// Its traffic selectors (those of the SPD entries it serves).
    pub selectors: &'a [Selector],
    /// Positions of the SPD entries it serves, in its direction's SPD.
    pub spd_entries: &'a [usize],
    /// Lifecycle state.
    pub state: SaState,
}

/// What the query API tells about an SPD entry.
#[derive(Debug, Clone, Copy)]
pub struct EntryInfo<'a> {
    /// Where it is.
    pub id: SpdEntryId,
    /// The entry.
    pub entry: &'a SpdEntry,
}

impl<'a> Query<'a> {
    pub(crate) fn new(stage: &'a IpsecStage) -> Self {
        Query { stage }
    }

    /// Changes whenever any answer below may change.
    pub fn generation(&self) -> u64 {
        self.stage.generation()
    }

    /// The SPD entry named `name` in `direction`'s SPD.
    pub fn spd_entry(&self, direction: Direction, name: &str) -> Option<SpdEntryId> {
        self.stage
            .spd(direction)
            .position(name)
            .map(|index| SpdEntryId { direction, index })
    }

    /// An SPD entry.
    pub fn entry(&self, id: SpdEntryId) -> Option<EntryInfo<'a>> {
        self.stage
            .spd(id.direction)
            .get(id.index)
            .map(|entry| EntryInfo { id, entry })
    }

    /// The SPD entry a flow matches first, as the stage would pick it.
    pub fn lookup(&self, direction: Direction, key: &FlowKey) -> Option<SpdEntryId> {
        self.stage
            .spd(direction)
            .lookup(key)
            .map(|index| SpdEntryId { direction, index })
    }

    fn info(&self, id: SaId) -> Option<SaInfo<'a>> {
        let sa = self.stage.sad().get(id)?;
        Some(SaInfo {
            id,
            name: &sa.params.name,
            spi: sa.params.spi,
            direction: sa.params.direction,
            mode: sa.params.mode,
            udp_encap: sa.params.udp_encap,
            selectors: &sa.selectors,
            spd_entries: &sa.spd_entries,
            state: sa.state,
        })
    }

    /// The SA that protects an outbound SPD entry's traffic now: for a
    /// bundle, the outermost one (whose SPI is on the wire). `None` if the
    /// entry does not PROTECT or its SA is not installed.
    pub fn outbound_sa(&self, entry: SpdEntryId) -> Option<SaInfo<'a>> {
        if entry.direction != Direction::Outbound {
            return None;
        }
        match &self.stage.spd(Direction::Outbound).get(entry.index)?.action {
            Action::Protect(names) => {
                let id = self.stage.sad().current(*names.last()?)?;
                self.info(id)
            }
            _ => None,
        }
    }

    /// The SA that would protect `key` sent now (SPD lookup, then
    /// [`Query::outbound_sa`]).
    pub fn outbound_sa_for_flow(&self, key: &FlowKey) -> Option<SaInfo<'a>> {
        self.outbound_sa(self.lookup(Direction::Outbound, key)?)
    }

    /// The inbound SA with this SPI, its selectors and SPD entries.
    pub fn inbound_sa(&self, spi: u32) -> Option<SaInfo<'a>> {
        self.info(self.stage.sad().by_spi(spi)?)
    }

    /// The SA installed under `name` now.
    pub fn sa_by_name(&self, name: &str) -> Option<SaInfo<'a>> {
        self.info(self.stage.sad().by_name(name)?)
    }
}
