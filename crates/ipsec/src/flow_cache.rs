//! An exact-match flow cache: remembers what an expensive per-flow decision
//! (the SPD's first-match lookup, the receive thread's choice of worker)
//! returned for a [`FlowKey`], so the packets after a flow's first pay a
//! hash and one set probe instead of the classifier's cache misses.
//!
//! # Why caching SPD decisions is sound here
//!
//! RFC 4301 puts a cache in front of the SPD in its processing model: an
//! outbound packet is matched against the cache of the selected SPD first
//! and the SPD is searched only on a miss (5.1, steps 2, 3a and 3b), an
//! inbound cleartext packet likewise against the SPD-I cache (5.2,
//! step 3b); 4.4.1 (under "Decorrelation") and Appendix B describe how to
//! make such caching safe. The hazard they address is caching an SPD
//! *entry*, with its ranges and wildcards, and matching *other* packets
//! against it: if that entry overlaps an earlier (higher-priority) entry,
//! a packet that falls in the overlap would take the cached entry although
//! the ordered search gives it the earlier one. Hence decorrelation: the
//! entries are rewritten so that no two overlap before they are cached
//! (4.4.1 "Decorrelation", Appendix B), and the pieces of one entry are kept
//! linked to it.
//!
//! This cache never matches a packet against an entry. Its key is the
//! packet's whole selector tuple as the SPD sees it (local and remote
//! address with their families, next-layer protocol, and the next-layer
//! fields or OPAQUE, RFC 4301 4.4.1.1; bitsgw has one SPD per direction and
//! no Name selector), compared for equality, and its value is what the
//! ordered first-match lookup returned for exactly that tuple, a miss
//! (`None`, so DISCARD by default) included. A hit is therefore the ordered
//! lookup's own answer for the same input: overlap between entries cannot
//! change it, and no decorrelation is needed. It stays right as long as the
//! SPD it was filled from is unchanged, so whoever owns a cache empties it
//! (or builds a new one) whenever the SPD changes: [`crate::spd::Spd`] is
//! rebuilt, cache and all, by [`crate::IpsecStage::set_spd`], and a cache
//! of query API answers is cleared when the query generation moves on.
//!
//! # Layout and bounds
//!
//! A fixed number of sets of [`WAYS`] slots, allocated once by
//! [`FlowCache::new`]; nothing is allocated afterwards and nothing grows.
//! A key lives in the set its hash picks; a fill into a full set evicts
//! that set's oldest fill (FIFO per set, so two hot keys of one set do not
//! evict each other while a way is left). Hostile traffic with ever new
//! keys only evicts: each of its packets costs one classifier lookup and
//! one fill, which is what it would cost without the cache. The hash (Fx,
//! not keyed) can be steered into one set by someone who knows it; that
//! only makes that set miss, at the same bounded cost.

use crate::selector::{Family, FlowKey, NextLayer};
use core::hash::Hasher;
use rustc_hash::FxHasher;

/// Slots per set.
pub const WAYS: usize = 4;

/// The capacity [`Default`] gives: a few thousand concurrent flows fit,
/// and the table (64 bytes a slot for the values used here) stays within
/// one core's L2.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The largest capacity [`FlowCache::new`] takes (256 MiB at 64 bytes a
/// slot): a larger one is more likely a typo than a plan.
pub const MAX_CAPACITY: usize = 1 << 22;

/// Why a flow cache could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowCacheError {
    /// The capacity is not a power of two in `WAYS..=MAX_CAPACITY`.
    #[error("flow cache capacity {requested} is not a power of two from {WAYS} to {MAX_CAPACITY}")]
    Capacity {
        /// What was asked for.
        requested: usize,
    },
}

/// Set in every stored tag, so an empty slot (all zero) equals no key.
const OCCUPIED: u64 = 1 << 63;

/// A [`FlowKey`] packed into three words. The packing is injective (every
/// field keeps all its bits, and the next-layer variant is numbered), so
/// two tags are equal exactly when their keys are: a hit is never a
/// different flow.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Tag {
    local: u128,
    remote: u128,
    rest: u64,
}

const EMPTY: Tag = Tag {
    local: 0,
    remote: 0,
    rest: 0,
};

impl Tag {
    #[inline]
    fn of(key: &FlowKey) -> Tag {
        let family = |f: Family| match f {
            Family::V4 => 0u64,
            Family::V6 => 1,
        };
        let (variant, fields) = match key.next {
            NextLayer::Opaque => (0u64, 0u64),
            NextLayer::None => (1, 0),
            NextLayer::Ports { local, remote } => (2, u64::from(local) << 16 | u64::from(remote)),
            NextLayer::Icmp { ty, code } => (3, u64::from(ty) << 8 | u64::from(code)),
            NextLayer::Mh { ty } => (4, u64::from(ty)),
        };
        Tag {
            local: key.local.bits,
            remote: key.remote.bits,
            rest: OCCUPIED
                | fields << 16
                | variant << 10
                | family(key.remote.family) << 9
                | family(key.local.family) << 8
                | u64::from(key.proto),
        }
    }

    #[inline]
    fn hash(&self) -> u64 {
        let mut h = FxHasher::default();
        h.write_u128(self.local);
        h.write_u128(self.remote);
        h.write_u64(self.rest);
        h.finish()
    }
}

/// One cached answer. A line each (for values up to 16 bytes), so probing
/// a way touches one cache line, never two.
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Slot<V> {
    tag: Tag,
    value: V,
}

/// A fixed-size, set-associative, exact-match cache from [`FlowKey`] to a
/// small `Copy` value (see the module documentation).
#[derive(Clone)]
pub struct FlowCache<V> {
    sets: Box<[[Slot<V>; WAYS]]>,
    /// Per set, the way the next fill of a new key takes.
    next_way: Box<[u8]>,
}

impl<V> core::fmt::Debug for FlowCache<V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlowCache")
            .field("capacity", &self.capacity())
            .field("ways", &WAYS)
            .finish_non_exhaustive()
    }
}

impl<V: Copy + Default> Default for FlowCache<V> {
    fn default() -> Self {
        Self::with_sets(DEFAULT_CAPACITY / WAYS)
    }
}

impl<V: Copy + Default> FlowCache<V> {
    /// An empty cache of `capacity` slots: a power of two from [`WAYS`] to
    /// [`MAX_CAPACITY`]. The only allocation the cache ever makes.
    pub fn new(capacity: usize) -> Result<Self, FlowCacheError> {
        if !capacity.is_power_of_two() || !(WAYS..=MAX_CAPACITY).contains(&capacity) {
            return Err(FlowCacheError::Capacity {
                requested: capacity,
            });
        }
        Ok(Self::with_sets(capacity / WAYS))
    }

    /// The smallest cache, one set: for an owner that seldom asks.
    pub fn minimal() -> Self {
        Self::with_sets(1)
    }

    fn with_sets(sets: usize) -> Self {
        let empty = Slot {
            tag: EMPTY,
            value: V::default(),
        };
        FlowCache {
            sets: vec![[empty; WAYS]; sets].into_boxed_slice(),
            next_way: vec![0; sets].into_boxed_slice(),
        }
    }

    /// Forgets every key (the decisions they stood for may have changed).
    pub fn clear(&mut self) {
        let empty = Slot {
            tag: EMPTY,
            value: V::default(),
        };
        self.sets.fill([empty; WAYS]);
        self.next_way.fill(0);
    }
}

impl<V> FlowCache<V> {
    /// How many keys it can hold at most.
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    /// How many keys it holds now (counted, so not for the packet path).
    pub fn len(&self) -> usize {
        self.sets
            .iter()
            .flatten()
            .filter(|s| s.tag.rest & OCCUPIED != 0)
            .count()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V: Copy> FlowCache<V> {
    #[inline]
    fn set_of(&self, tag: &Tag) -> usize {
        // `sets.len()` is a power of two, and Fx's `finish` leaves its
        // best-mixed bits at the bottom.
        tag.hash() as usize & (self.sets.len() - 1)
    }

    /// The value cached for `key`, if any.
    #[inline]
    pub fn get(&self, key: &FlowKey) -> Option<V> {
        let tag = Tag::of(key);
        self.sets[self.set_of(&tag)]
            .iter()
            .find(|s| s.tag == tag)
            .map(|s| s.value)
    }

    /// Caches `value` for `key`, replacing the value it had, or else
    /// evicting its set's oldest fill when the set is full.
    pub fn insert(&mut self, key: &FlowKey, value: V) {
        let tag = Tag::of(key);
        let set = self.set_of(&tag);
        match self.sets[set].iter_mut().find(|s| s.tag == tag) {
            Some(slot) => slot.value = value,
            None => self.fill(set, tag, value),
        }
    }

    /// The value cached for `key`; on a miss, `decide(key)`, cached. The
    /// key is hashed once either way.
    #[inline]
    pub fn get_or_insert_with(&mut self, key: &FlowKey, decide: impl FnOnce(&FlowKey) -> V) -> V {
        let tag = Tag::of(key);
        let set = self.set_of(&tag);
        if let Some(slot) = self.sets[set].iter().find(|s| s.tag == tag) {
            return slot.value;
        }
        let value = decide(key);
        self.fill(set, tag, value);
        value
    }

    /// Puts a key known to be absent into `set`.
    #[inline]
    fn fill(&mut self, set: usize, tag: Tag, value: V) {
        let way = &mut self.next_way[set];
        self.sets[set][usize::from(*way)] = Slot { tag, value };
        *way = (*way + 1) % WAYS as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::{proto, Addr};
    use proptest::prelude::*;

    fn v4(bits: u32) -> Addr {
        Addr {
            family: Family::V4,
            bits: u128::from(bits),
        }
    }

    fn udp(remote: u32, port: u16) -> FlowKey {
        FlowKey {
            local: v4(0xc0a8_0001),
            remote: v4(remote),
            proto: proto::UDP,
            next: NextLayer::Ports {
                local: 40000,
                remote: port,
            },
        }
    }

    /// Keys that land in `cache`'s set `set`, found by trying.
    fn keys_in_set(cache: &FlowCache<u32>, set: usize, n: usize) -> Vec<FlowKey> {
        (0u32..)
            .map(|i| udp(0x0a00_0000 + i, 53))
            .filter(|k| cache.set_of(&Tag::of(k)) == set)
            .take(n)
            .collect()
    }

    #[test]
    fn hit_and_miss() {
        let mut c = FlowCache::<Option<usize>>::new(16).unwrap();
        let a = udp(0x0a00_0001, 53);
        assert_eq!(c.get(&a), None);
        c.insert(&a, Some(7));
        assert_eq!(c.get(&a), Some(Some(7)));
        // A cached "no entry matched" is a hit too.
        let b = udp(0x0a00_0002, 53);
        c.insert(&b, None);
        assert_eq!(c.get(&b), Some(None));
        // One field apart is another flow.
        assert_eq!(c.get(&udp(0x0a00_0001, 54)), None);
        // Inserting again replaces, without taking a second slot.
        c.insert(&a, Some(8));
        assert_eq!(c.get(&a), Some(Some(8)));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn get_or_insert_with_decides_once() {
        let mut c = FlowCache::<u32>::default();
        let k = udp(0x0a00_0001, 53);
        let mut asked = 0;
        for _ in 0..3 {
            let v = c.get_or_insert_with(&k, |_| {
                asked += 1;
                42
            });
            assert_eq!(v, 42);
        }
        assert_eq!(asked, 1);
    }

    #[test]
    fn a_full_set_evicts_its_oldest_fill() {
        let mut c = FlowCache::<u32>::new(64).unwrap();
        let keys = keys_in_set(&c, 3, WAYS + 2);
        for (i, k) in keys.iter().take(WAYS).enumerate() {
            c.insert(k, i as u32);
        }
        assert!(keys[..WAYS].iter().all(|k| c.get(k).is_some()));
        // Hits do not reorder: the fifth key evicts the first filled.
        assert_eq!(c.get(&keys[0]), Some(0));
        c.insert(&keys[WAYS], 100);
        assert_eq!(c.get(&keys[0]), None);
        assert!(keys[1..=WAYS].iter().all(|k| c.get(k).is_some()));
        c.insert(&keys[WAYS + 1], 101);
        assert_eq!(c.get(&keys[1]), None);
        assert_eq!(c.get(&keys[WAYS + 1]), Some(101));
        // Other sets are untouched.
        assert_eq!(c.len(), WAYS);
    }

    #[test]
    fn clear_forgets_everything() {
        let mut c = FlowCache::<u32>::new(64).unwrap();
        let keys: Vec<FlowKey> = (0..40).map(|i| udp(0x0a00_0000 + i, 53)).collect();
        for k in &keys {
            c.insert(k, 1);
        }
        assert!(!c.is_empty());
        c.clear();
        assert!(c.is_empty());
        assert!(keys.iter().all(|k| c.get(k).is_none()));
        assert_eq!(c.capacity(), 64);
    }

    #[test]
    fn capacity_must_be_a_power_of_two_in_range() {
        for bad in [0, 1, 2, 3, 6, 4095, MAX_CAPACITY * 2] {
            assert_eq!(
                FlowCache::<u32>::new(bad).map(|c| c.capacity()),
                Err(FlowCacheError::Capacity { requested: bad })
            );
        }
        for good in [WAYS, 8, 4096] {
            assert_eq!(FlowCache::<u32>::new(good).unwrap().capacity(), good);
        }
        assert_eq!(FlowCache::<u32>::default().capacity(), DEFAULT_CAPACITY);
    }

    #[test]
    fn random_keys_only_evict() {
        let mut c = FlowCache::<u64>::new(1024).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut last = None;
        for i in 0..100_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = FlowKey {
                local: v4(x as u32),
                remote: Addr {
                    family: Family::V6,
                    bits: u128::from(x) << 64 | u128::from(i),
                },
                proto: (x >> 32) as u8,
                next: NextLayer::Ports {
                    local: (x >> 40) as u16,
                    remote: i as u16,
                },
            };
            c.insert(&k, i);
            last = Some((k, i));
        }
        assert_eq!(c.capacity(), 1024);
        assert_eq!(c.len(), 1024);
        let (k, i) = last.unwrap();
        assert_eq!(c.get(&k), Some(i));
    }

    /// Structured keys (consecutive hosts, as an SPD's flows often are)
    /// spread over the sets: 1024 of them in 1024 sets of 4 ways lose only
    /// the few that land in a set already holding 4 (about 0.4% for a
    /// uniform hash).
    #[test]
    fn consecutive_hosts_spread_over_the_sets() {
        let mut c = FlowCache::<u32>::new(4096).unwrap();
        let v6 = |i: u32| FlowKey {
            local: Addr {
                family: Family::V6,
                bits: 0x2001_0db8_000a_0000_0000_0000_0000_0001,
            },
            remote: Addr {
                family: Family::V6,
                bits: (0x2001_0db8_0002_0000u128 << 64) | (u128::from(i) << 64),
            },
            proto: proto::ICMPV6,
            next: NextLayer::Icmp { ty: 128, code: 0 },
        };
        for family in [0, 1] {
            c.clear();
            let keys: Vec<FlowKey> = (0..1024)
                .map(|i| {
                    if family == 0 {
                        udp(0x0a00_0000 + i, 53)
                    } else {
                        v6(i)
                    }
                })
                .collect();
            for k in &keys {
                c.insert(k, 1);
            }
            let kept = keys.iter().filter(|k| c.get(k).is_some()).count();
            assert!(kept >= 1000, "family {family}: {kept} of 1024 kept");
        }
    }

    fn addr() -> impl Strategy<Value = Addr> {
        (any::<bool>(), 0u128..4).prop_map(|(v6, bits)| Addr {
            family: if v6 { Family::V6 } else { Family::V4 },
            bits,
        })
    }

    fn key() -> impl Strategy<Value = FlowKey> {
        let next = prop_oneof![
            Just(NextLayer::Opaque),
            Just(NextLayer::None),
            (0u16..3, 0u16..3).prop_map(|(local, remote)| NextLayer::Ports { local, remote }),
            (0u8..3, 0u8..3).prop_map(|(ty, code)| NextLayer::Icmp { ty, code }),
            (0u8..3).prop_map(|ty| NextLayer::Mh { ty }),
        ];
        (addr(), addr(), 0u8..3, next).prop_map(|(local, remote, proto, next)| FlowKey {
            local,
            remote,
            proto,
            next,
        })
    }

    proptest! {
        /// The packing loses nothing: tags are equal exactly when keys are
        /// (small value ranges, so equal keys and near misses are common).
        #[test]
        fn tags_are_equal_exactly_when_keys_are(a in key(), b in key()) {
            prop_assert_eq!(Tag::of(&a) == Tag::of(&b), a == b);
        }

        /// Whatever the sequence, a hit returns the last value inserted
        /// for that key.
        #[test]
        fn hits_return_the_last_insert(ops in proptest::collection::vec((key(), 0u32..1000), 1..300)) {
            let mut c = FlowCache::<u32>::new(8).unwrap();
            let mut last = std::collections::HashMap::new();
            for (k, v) in &ops {
                c.insert(k, *v);
                last.insert(*k, *v);
                for (k, v) in &last {
                    if let Some(got) = c.get(k) {
                        prop_assert_eq!(got, *v);
                    }
                }
            }
            prop_assert!(c.len() <= 8);
        }
    }
}
