//! The stage's side of the read-only query API ([`bitsgw_ipsec_query`],
//! where the contract and why it is a door of its own are described):
//! [`Query`] answers from an [`IpsecStage`] with the API's own views, as
//! inherent methods (for the pipeline and tests) and as [`IpsecQuery`]
//! (for the mobility stage, which knows nothing else).

use crate::sa::Direction;
use crate::sad::SaId;
use crate::selector::FlowKey;
use crate::spd::{Action, SpdEntryId};
use crate::stage::IpsecStage;
pub use bitsgw_ipsec_query::{IpsecQuery, PolicyAction, SaView, SpdEntryView};

/// A read-only view of the IPsec stage.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    stage: &'a IpsecStage,
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
    pub fn entry(&self, id: SpdEntryId) -> Option<SpdEntryView<'a>> {
        let entry = self.stage.spd(id.direction).get(id.index)?;
        Some(SpdEntryView {
            id,
            name: &entry.name,
            selector: &entry.selector,
            action: match entry.action {
                Action::Bypass => PolicyAction::Bypass,
                Action::Discard => PolicyAction::Discard,
                Action::Protect(_) => PolicyAction::Protect,
            },
        })
    }

    /// The SPD entry a flow matches first, as the stage would pick it.
    pub fn lookup(&self, direction: Direction, key: &FlowKey) -> Option<SpdEntryId> {
        self.stage
            .spd(direction)
            .lookup(key)
            .map(|index| SpdEntryId { direction, index })
    }

    fn info(&self, id: SaId) -> Option<SaView<'a>> {
        let sa = self.stage.sad().get(id)?;
        Some(SaView {
            slot: id.index(),
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
    pub fn outbound_sa(&self, entry: SpdEntryId) -> Option<SaView<'a>> {
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
    pub fn outbound_sa_for_flow(&self, key: &FlowKey) -> Option<SaView<'a>> {
        self.outbound_sa(self.lookup(Direction::Outbound, key)?)
    }

    /// The inbound SA with this SPI, its selectors and SPD entries.
    pub fn inbound_sa(&self, spi: u32) -> Option<SaView<'a>> {
        self.info(self.stage.sad().by_spi(spi)?)
    }

    /// The SA installed under `name` now.
    pub fn sa_by_name(&self, name: &str) -> Option<SaView<'a>> {
        self.info(self.stage.sad().by_name(name)?)
    }
}

impl IpsecQuery for Query<'_> {
    fn generation(&self) -> u64 {
        Query::generation(self)
    }
    fn spd_entry(&self, direction: Direction, name: &str) -> Option<SpdEntryId> {
        Query::spd_entry(self, direction, name)
    }
    fn entry(&self, id: SpdEntryId) -> Option<SpdEntryView<'_>> {
        Query::entry(self, id)
    }
    fn lookup(&self, direction: Direction, key: &FlowKey) -> Option<SpdEntryId> {
        Query::lookup(self, direction, key)
    }
    fn outbound_sa(&self, entry: SpdEntryId) -> Option<SaView<'_>> {
        Query::outbound_sa(self, entry)
    }
    fn outbound_sa_for_flow(&self, key: &FlowKey) -> Option<SaView<'_>> {
        Query::outbound_sa_for_flow(self, key)
    }
    fn inbound_sa(&self, spi: u32) -> Option<SaView<'_>> {
        Query::inbound_sa(self, spi)
    }
    fn sa_by_name(&self, name: &str) -> Option<SaView<'_>> {
        Query::sa_by_name(self, name)
    }
}
