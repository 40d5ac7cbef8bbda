//! The security policy database (RFC 4301 4.4.1): one ordered list of
//! entries per direction, first match wins, indexed by [`SpdIndex`], with
//! an exact-match [`FlowCache`] in front of the index for the packet path
//! (RFC 4301 5.1 steps 2 and 3, 5.2 step 3b; why it needs no
//! decorrelation is in [`crate::flow_cache`]).

use crate::flow_cache::FlowCache;
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

pub use bitsgw_ipsec_query::SpdEntryId;

/// One direction's SPD. Its entries never change once it is made: a new
/// policy is a new `Spd` (see [`crate::IpsecStage::set_spd`]), which is
/// what keeps its flow cache right.
#[derive(Debug, Clone)]
pub struct Spd {
    entries: Vec<SpdEntry>,
    index: SpdIndex,
    hits: Vec<u64>,
    /// Position by name (the query API's "which SPI protects entry X"
    /// is asked per packet).
    by_name: FxHashMap<Box<str>, usize>,
    /// The index's answers for recent flow keys, misses included.
    cache: FlowCache<Option<usize>>,
    /// Digest of the entries' names and selectors in order: two SPDs with
    /// the same digest give every flow the same position.
    fingerprint: u64,
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
        // An empty SPD answers every lookup at once, and every stage holds
        // two of them until its policy arrives: one set is enough there.
        let cache = if entries.is_empty() {
            FlowCache::minimal()
        } else {
            FlowCache::default()
        };
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = rustc_hash::FxHasher::default();
            for e in &entries {
                e.name.hash(&mut h);
                e.selector.hash(&mut h);
            }
            h.finish()
        };
        Spd {
            entries,
            index,
            hits,
            by_name,
            cache,
            fingerprint,
        }
    }

    /// Digest of the entries' names and selectors: a position found in an
    /// SPD with the same digest (another stage's copy) is this SPD's answer
    /// for the same flow.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Counts a hit on entry `i`, found by a lookup made elsewhere.
    #[inline]
    pub(crate) fn count_hit(&mut self, i: usize) {
        if let Some(h) = self.hits.get_mut(i) {
            *h += 1;
        }
    }

    /// An SPD whose flow cache has `capacity` slots, so tests can make it
    /// evict.
    #[cfg(test)]
    pub(crate) fn with_cache_capacity(
        entries: Vec<SpdEntry>,
        capacity: usize,
    ) -> Result<Self, crate::flow_cache::FlowCacheError> {
        let cache = FlowCache::new(capacity)?;
        Ok(Spd {
            cache,
            ..Spd::new(entries)
        })
    }

    /// Position of the first entry matching `key`, from the index (the
    /// query API's path: read-only, uncached, uncounted).
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<usize> {
        self.index.lookup(key)
    }

    /// Position of the first entry matching `key`, counted as a hit on
    /// that entry: the stage's per-packet lookup. The flow cache answers
    /// for a key it has seen since this SPD was made, the index otherwise;
    /// both give [`Spd::lookup`]'s answer. Public so benches and tools can
    /// measure that path on an SPD of their own; the stage hands out its
    /// SPDs only as `&Spd`, so nobody else can count on them.
    #[inline]
    pub fn lookup_and_count(&mut self, key: &FlowKey) -> Option<usize> {
        let index = &self.index;
        let i = self.cache.get_or_insert_with(key, |k| index.lookup(k))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spd_index::tests::{flow_key, selector};
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    fn spd_of(selectors: &[Selector], cache_capacity: usize) -> Spd {
        let entries = selectors
            .iter()
            .enumerate()
            .map(|(i, s)| SpdEntry {
                name: format!("e{i}").into(),
                selector: *s,
                action: Action::Bypass,
            })
            .collect();
        Spd::with_cache_capacity(entries, cache_capacity).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// The cached per-packet lookup gives the uncached index's answer
        /// for every packet of a stream with repeats (so hits, misses and,
        /// in the small caches, evictions all happen), and counts every
        /// packet as the uncached path would.
        #[test]
        fn cached_lookup_is_the_index_lookup(
            selectors in proptest::collection::vec(selector(), 0..120),
            keys in proptest::collection::vec(flow_key(), 1..48),
            stream in proptest::collection::vec(any::<proptest::sample::Index>(), 1..400),
            capacity in prop_oneof![Just(4usize), Just(16), Just(crate::flow_cache::DEFAULT_CAPACITY)],
        ) {
            let mut spd = spd_of(&selectors, capacity);
            let index = SpdIndex::new(selectors.clone());
            let mut want_hits = vec![0u64; selectors.len()];
            for pick in &stream {
                let k = pick.get(&keys);
                let want = index.lookup(k);
                prop_assert_eq!(spd.lookup_and_count(k), want, "key {:?}", k);
                prop_assert_eq!(spd.lookup(k), want);
                if let Some(i) = want {
                    want_hits[i] += 1;
                }
            }
            prop_assert_eq!(spd.hits(), &want_hits[..]);
        }
    }

    #[test]
    fn an_empty_spd_matches_nothing_and_counts_nothing() {
        let mut spd = Spd::default();
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..100 {
            let k = flow_key().new_tree(&mut runner).unwrap().current();
            assert_eq!(spd.lookup_and_count(&k), None);
        }
        assert!(spd.hits().is_empty());
    }
}
