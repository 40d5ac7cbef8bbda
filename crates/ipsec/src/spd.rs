//! The security policy database (RFC 4301 4.4.1): one ordered list of
//! entries per direction, first match wins, indexed by [`SpdIndex`].

use crate::sad::NameId;
use crate::selector::{FlowKey, Selector};
use crate::spd_index::SpdIndex;
use rustc_hash::FxHashMap;

/// What an SPD entry does with the traffic it selects (RFC 4301 4.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let the traffic pass without IPsec.
    Bypass,
    /// Drop it.
    Discard,
    /// Protect it with these SAs, applied outbound in order (a bundle,
    /// RFC 4301 4.5: the first is innermost).
    Protect(Box<[NameId]>),
}

/// One SPD entry.
#[derive(Debug, Clone)]
pub struct SpdEntry {
    /// The entry's name (from the policy file).
    pub name: Box<str>,
    /// Its selectors.
    pub selector: Selector,
    /// Its action.
    pub action: Action,
}

/// Identifies an SPD entry: its direction and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpdEntryId {
    /// Direction of the SPD it is in.
    pub direction: crate::sa::Direction,
    /// Position in that SPD (0 = first).
    pub index: usize,
}

/// One direction's SPD.
#[derive(Debug, Clone)]
pub struct Spd {
    entries: Vec<SpdEntry>,
    index: SpdIndex,
    hits: Vec<u64>,
    /// Position by name (the query API's "which SPI protects entry X"
    /// is asked per packet).
    by_name: FxHashMap<Box<str>, usize>,
}

impl Default for Spd {
    fn default() -> Self {
        Spd::new(Vec::new())
    }
}

impl Spd {
    /// An SPD of `entries` in priority order.
    pub fn new(entries: Vec<SpdEntry>) -> Self {
        let index = SpdIndex::new(entries.iter().map(|e| e.selector).collect());
        let hits = vec![0; entries.len()];
        let mut by_name = FxHashMap::default();
        for (i, e) in entries.iter().enumerate() {
            // The first of two equal names wins, as a scan would find it.
            by_name.entry(e.name.clone()).or_insert(i);
        }
        Spd {
            entries,
            index,
            hits,
            by_name,
        }
    }

    /// Position of the first entry matching `key`.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<usize> {
        self.index.lookup(key)
    }

    /// Position of the first entry matching `key`, counted as a hit.
    #[inline]
    pub(crate) fn lookup_and_count(&mut self, key: &FlowKey) -> Option<usize> {
        let i = self.index.lookup(key)?;
        if let Some(h) = self.hits.get_mut(i) {
            *h += 1;
        }
        Some(i)
    }

    /// The entries in order.
    pub fn entries(&self) -> &[SpdEntry] {
        &self.entries
    }

    /// An entry.
    pub fn get(&self, index: usize) -> Option<&SpdEntry> {
        self.entries.get(index)
    }

    /// Hits per entry, in order.
    pub fn hits(&self) -> &[u64] {
        &self.hits
    }

    /// Position of the entry named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
