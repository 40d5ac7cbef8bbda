//! The read-only query API of bitsgw's IPsec stage: the contract between
//! the stage and the mobility stage around it (the seed draft's
//! "DSMIPv6-IPsec API", draft-laganier-mext-dsmipv6-ipsec section 4).
//!
//! Why this is a crate of its own: the seed's point is that (DS)MIPv6 can
//! be built around a native or bump-in-the-stack IPsec implementation
//! conformant to RFC 4301 **without modifying it**. The mobility stage
//! therefore depends on this crate and not on `bitsgw-ipsec`: it can name
//! the answers below and nothing else of the stage, so no mobility code can
//! read the stage's internals or change its state, and the compiler, not a
//! convention, keeps it that way.
//!
//! The API answers two questions, cheaply enough to ask per packet:
//! - outbound: for an SPD entry (or a flow, such as "MH BU from HoA to
//!   HA"), which SA protects it now, and with which SPI;
//! - inbound: for an SPI, which SA it is, its traffic selectors and the SPD
//!   entries it serves.
//!
//! A generation number changes whenever the answers may change (an SA
//! installed, removed or replaced; the SPD reloaded), so callers may cache
//! answers for as long as it stays the same.
//!
//! The answers are views of their own ([`SaView`], [`SpdEntryView`]) made
//! of plain values: SPI, direction, mode, selectors ([`selector`]), never
//! the stage's structures. The stage implements [`IpsecQuery`].
//!
//! ```
//! use bitsgw_ipsec_query::{sa::Direction, IpsecQuery};
//!
//! /// Req #3 of the seed: is this outbound ESP packet the Binding Update?
//! fn is_binding_update(q: &impl IpsecQuery, bu_entry: &str, esp_spi: u32) -> bool {
//!     q.spd_entry(Direction::Outbound, bu_entry)
//!         .and_then(|e| q.outbound_sa(e))
//!         .is_some_and(|sa| sa.spi == esp_spi)
//! }
//! ```

pub mod sa;
pub mod selector;

use sa::{Direction, Mode, SaState, UdpEncap};
use selector::{FlowKey, Selector};

/// Identifies an SPD entry: its direction and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpdEntryId {
    /// Direction of the SPD it is in.
    pub direction: Direction,
    /// Position in that SPD (0 = first).
    pub index: usize,
}

/// What an SPD entry does with the traffic it selects (RFC 4301 4.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyAction {
    /// Passes without IPsec.
    Bypass,
    /// Dropped.
    Discard,
    /// Protected by an SA (or a bundle).
    Protect,
}

/// What the query API tells about an SPD entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpdEntryView<'a> {
    /// Where it is.
    pub id: SpdEntryId,
    /// Its name in the policy.
    pub name: &'a str,
    /// Its selectors.
    pub selector: &'a Selector,
    /// What it does.
    pub action: PolicyAction,
}

/// What the query API tells about an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaView<'a> {
    /// The SA's slot in the stage, the same for as long as the generation
    /// stays the same (for a cache keyed by SA, nothing more).
    pub slot: usize,
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
    /// Its traffic selectors (RFC 4301 4.4.2.1: those of the SPD entries
    /// it serves), in the orientation of its direction.
    pub selectors: &'a [Selector],
    /// Positions of the SPD entries it serves, in its direction's SPD.
    pub spd_entries: &'a [usize],
    /// Lifecycle state.
    pub state: SaState,
}

/// The questions the IPsec stage answers. Nothing here changes the
/// stage's state.
pub trait IpsecQuery {
    /// Changes whenever any answer below may change.
    fn generation(&self) -> u64;

    /// The SPD entry named `name` in `direction`'s SPD.
    fn spd_entry(&self, direction: Direction, name: &str) -> Option<SpdEntryId>;

    /// An SPD entry.
    fn entry(&self, id: SpdEntryId) -> Option<SpdEntryView<'_>>;

    /// The SPD entry a flow matches first, as the stage would pick it.
    fn lookup(&self, direction: Direction, key: &FlowKey) -> Option<SpdEntryId>;

    /// The SA that protects an outbound SPD entry's traffic now: for a
    /// bundle, the outermost one (whose SPI is on the wire). `None` if the
    /// entry does not PROTECT or its SA is not installed.
    fn outbound_sa(&self, entry: SpdEntryId) -> Option<SaView<'_>>;

    /// The SA that would protect `key` sent now (SPD lookup, then
    /// [`IpsecQuery::outbound_sa`]).
    fn outbound_sa_for_flow(&self, key: &FlowKey) -> Option<SaView<'_>> {
        self.outbound_sa(self.lookup(Direction::Outbound, key)?)
    }

    /// The inbound SA with this SPI, its selectors and SPD entries.
    fn inbound_sa(&self, spi: u32) -> Option<SaView<'_>>;

    /// The SA installed under `name` now.
    fn sa_by_name(&self, name: &str) -> Option<SaView<'_>>;
}
