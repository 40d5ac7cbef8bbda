//! The security association database (RFC 4301 4.4.2).
//!
//! SAs live in a slab indexed by [`SaId`]. Inbound SAs are found by SPI in a
//! flat open-addressing table (`spi_table`; RFC 4301 4.1: the SPI alone
//! selects a unicast SA; the destination is checked after). The SPD refers
//! to SAs by name through [`NameId`] slots, so replacing an SA (rekeying)
//! is one slot update and never touches the SPD.

mod spi_table;

use crate::sa::{Direction, Sa};
use rustc_hash::FxHashMap;
use spi_table::SpiTable;

/// Index of an installed SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaId(pub(crate) u32);

impl SaId {
    /// The slab index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Index of an SA name that SPD entries refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NameId(pub(crate) u32);

/// What the SAD refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SadError {
    /// Another inbound SA already has this SPI.
    #[error("SPI {spi:#010x} is already used by inbound SA \"{other}\"")]
    SpiInUse {
        /// The SPI.
        spi: u32,
        /// The SA that has it.
        other: String,
    },
    /// The transform refused the keys.
    #[error("{0}")]
    Crypto(#[from] crate::crypto::CryptoError),
}

#[derive(Debug, Default)]
struct NameSlot {
    name: Box<str>,
    current: Option<SaId>,
    /// Inbound SAs this name used before, kept (reachable by SPI) until the
    /// current one has verified a packet, so nothing in flight is lost in a
    /// rekey.
    retiring: Vec<SaId>,
}

/// The SAD.
#[derive(Debug, Default)]
pub struct Sad {
    slots: Vec<Option<Sa>>,
    free: Vec<u32>,
    by_spi: SpiTable,
    names: Vec<NameSlot>,
    by_name: FxHashMap<Box<str>, NameId>,
    generation: u64,
}

impl Sad {
    /// An empty SAD.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes whenever the SPI/SA mapping changes (install, remove,
    /// replace) or an installed SA's parameters change in place.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// An installed SA's parameters changed in place: whatever was derived
    /// from them (the outbound fast path's outer headers) is derived again.
    pub(crate) fn params_changed(&mut self) {
        self.generation += 1;
    }

    /// The name slot for `name`, created if new.
    pub fn name_id(&mut self, name: &str) -> NameId {
        if let Some(id) = self.by_name.get(name) {
            return *id;
        }
        let id = NameId(self.names.len() as u32);
        self.names.push(NameSlot {
            name: name.into(),
            ..NameSlot::default()
        });
        self.by_name.insert(name.into(), id);
        id
    }

    /// The slot of an existing name.
    pub fn find_name(&self, name: &str) -> Option<NameId> {
        self.by_name.get(name).copied()
    }

    /// The name of a slot.
    pub fn name(&self, id: NameId) -> &str {
        self.names.get(id.0 as usize).map_or("", |s| &s.name)
    }

    /// The SA a name refers to now.
    #[inline]
    pub fn current(&self, id: NameId) -> Option<SaId> {
        self.names.get(id.0 as usize).and_then(|s| s.current)
    }

    /// Installs `sa` under its name, replacing the SA that name had. An
    /// outbound predecessor is removed at once; an inbound one stays
    /// reachable by its SPI until the new SA has verified a packet.
    pub fn install(&mut self, sa: Sa) -> Result<SaId, SadError> {
        if let Some(other) = self.spi_holder_of_other_name(&sa) {
            return Err(SadError::SpiInUse {
                spi: sa.params.spi,
                other: self
                    .get(other)
                    .map_or_else(String::new, |o| o.params.name.clone()),
            });
        }
        Ok(self.insert(sa))
    }

    /// Installs `sa` like [`Sad::install`], but an SA of another name that
    /// holds its inbound SPI (one the configuration being loaded replaces
    /// or drops, or a retiring predecessor) is removed first: the
    /// configuration decides which SA an SPI selects (RFC 4301 4.1), so
    /// this never fails.
    pub(crate) fn install_displacing(&mut self, sa: Sa) -> SaId {
        if let Some(other) = self.spi_holder_of_other_name(&sa) {
            self.remove(other);
        }
        self.insert(sa)
    }

    /// The inbound SA of another name that holds `sa`'s SPI.
    fn spi_holder_of_other_name(&self, sa: &Sa) -> Option<SaId> {
        if sa.params.direction != Direction::Inbound {
            return None;
        }
        let other = SaId(self.by_spi.get(sa.params.spi)?);
        let same_name = self
            .get(other)
            .is_some_and(|o| o.params.name == sa.params.name);
        (!same_name).then_some(other)
    }

    /// Installs `sa` under its name; its SPI is free or its name's.
    fn insert(&mut self, mut sa: Sa) -> SaId {
        let inbound = sa.params.direction == Direction::Inbound;
        let spi = sa.params.spi;
        let name = self.name_id(&sa.params.name);
        sa.name_id = Some(name);
        let id = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(sa);
                SaId(i)
            }
            None => {
                self.slots.push(Some(sa));
                SaId((self.slots.len() - 1) as u32)
            }
        };
        let previous = self.names[name.0 as usize].current.replace(id);
        if let Some(prev) = previous {
            let prev_spi = self.get(prev).map(|p| p.params.spi);
            if inbound && prev_spi != Some(spi) {
                self.names[name.0 as usize].retiring.push(prev);
            } else {
                self.remove_slot(prev);
            }
        }
        if inbound {
            self.by_spi.insert(spi, id.0);
        }
        self.generation += 1;
        id
    }

    fn remove_slot(&mut self, id: SaId) -> Option<Sa> {
        let sa = self.slots.get_mut(id.index())?.take()?;
        if sa.params.direction == Direction::Inbound && self.by_spi.get(sa.params.spi) == Some(id.0)
        {
            self.by_spi.remove(sa.params.spi);
        }
        self.free.push(id.0);
        self.generation += 1;
        Some(sa)
    }

    /// Removes an SA (its name then refers to nothing, so PROTECT traffic
    /// for it is dropped, never sent in clear).
    pub fn remove(&mut self, id: SaId) -> Option<Sa> {
        let sa = self.remove_slot(id)?;
        if let Some(n) = sa.name_id {
            let slot = &mut self.names[n.0 as usize];
            if slot.current == Some(id) {
                slot.current = None;
            }
            slot.retiring.retain(|r| *r != id);
        }
        Some(sa)
    }

    /// Called when `id` has verified a packet: its retiring predecessors
    /// are no longer needed.
    pub(crate) fn confirm_in_use(&mut self, id: SaId) {
        let Some(name) = self.get(id).and_then(|sa| sa.name_id) else {
            return;
        };
        if self.names[name.0 as usize].retiring.is_empty()
            || self.names[name.0 as usize].current != Some(id)
        {
            return;
        }
        let retiring = std::mem::take(&mut self.names[name.0 as usize].retiring);
        for old in retiring {
            self.remove_slot(old);
        }
    }

    /// Whether the name of SA `id` has SAs waiting to retire (asked per
    /// inbound packet: no string hashing).
    #[inline]
    pub(crate) fn has_retiring(&self, id: SaId) -> bool {
        self.get(id)
            .and_then(|sa| sa.name_id)
            .is_some_and(|n| !self.names[n.0 as usize].retiring.is_empty())
    }

    /// The inbound SA with `spi`.
    #[inline]
    pub fn by_spi(&self, spi: u32) -> Option<SaId> {
        self.by_spi.get(spi).map(SaId)
    }

    /// An SA.
    #[inline]
    pub fn get(&self, id: SaId) -> Option<&Sa> {
        self.slots.get(id.index()).and_then(Option::as_ref)
    }

    /// An SA, mutable.
    #[inline]
    pub fn get_mut(&mut self, id: SaId) -> Option<&mut Sa> {
        self.slots.get_mut(id.index()).and_then(Option::as_mut)
    }

    /// The SA installed under `name` now.
    pub fn by_name(&self, name: &str) -> Option<SaId> {
        self.find_name(name).and_then(|n| self.current(n))
    }

    /// Every installed SA.
    pub fn iter(&self) -> impl Iterator<Item = (SaId, &Sa)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|sa| (SaId(i as u32), sa)))
    }

    /// Every installed SA, mutable.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (SaId, &mut Sa)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|sa| (SaId(i as u32), sa)))
    }

    /// Number of installed SAs.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
