//! The SAD's inbound index: SPI to SA slot (RFC 4301 4.1: the SPI alone
//! selects a unicast inbound SA).
//!
//! One flat table of 64-byte buckets, each one cache line holding eight
//! SPIs and their eight slot indexes; an SPI lives in the bucket its hash
//! picks or, when that is full, in the next bucket with room (linear
//! probing by bucket). The table is a power of two long and at most half
//! full, so a bucket overflows rarely (hashed uniformly, one bucket in
//! fifty gets more than eight SPIs) and a lookup almost always reads one
//! line and compares its eight SPIs at once, with branches that go the
//! same way every time. Both matter once the table is larger than the
//! caches: a SwissTable reads its control bytes and then its slot (two
//! lines), and probing entry by entry takes a branch that depends on where
//! the SPI sits, whose mispredictions also throw away the loads of the
//! next lookups that the processor had started (measured in BENCHMARKS.md,
//! "SAD at 1M SAs").
//!
//! Removal moves an entry of a later bucket back into the hole when its
//! probe passed the hole's bucket, and so on down the run of full buckets,
//! instead of leaving a tombstone, so lookups never lengthen with churn
//! (rekeying installs and removes an SA at a time).
//!
//! The hash is not keyed. Inbound SPIs are chosen by this side (RFC 4301
//! 4.1; by configuration or by the key exchange), so a peer cannot fill a
//! bucket; a lookup of an unknown SPI stops at the first bucket with a
//! free entry, almost always the first.

/// Marks a free entry: no SA slot has this index (the slab would need
/// 2^32 - 1 SAs first).
const FREE_SLOT: u32 = u32::MAX;

/// Entries per bucket: one cache line of 4-byte SPIs and slot indexes.
const WAYS: usize = 8;

/// The smallest table (two buckets, so the hash's shift stays below 64).
const MIN_BUCKETS: usize = 2;

/// The hash's two odd multipliers (2^64 / golden ratio, and MurmurHash3's
/// finaliser constant).
const HASH_MULTIPLIERS: [u64; 2] = [0x9e37_79b9_7f4a_7c15, 0xff51_afd7_ed55_8ccd];

/// Eight SPIs and the slot indexes they map to; `slots[i] == FREE_SLOT`
/// marks entry `i` free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
struct Bucket {
    spis: [u32; WAYS],
    slots: [u32; WAYS],
}

const EMPTY_BUCKET: Bucket = Bucket {
    spis: [0; WAYS],
    slots: [FREE_SLOT; WAYS],
};

impl Bucket {
    /// The slot index `spi` maps to here, or `FREE_SLOT`. Every entry
    /// contributes its slot where its SPI is `spi` and all ones elsewhere,
    /// and the contributions are ANDed: a free entry (all ones) never
    /// counts, whatever its SPI field, and an SPI is in a bucket at most
    /// once. Written as arithmetic, not as a choice, so that it compiles
    /// to a few vector instructions without a branch.
    #[inline]
    fn slot_of(&self, spi: u32) -> u32 {
        let mut slot = FREE_SLOT;
        for i in 0..WAYS {
            slot &= self.slots[i] | 0u32.wrapping_sub(u32::from(self.spis[i] != spi));
        }
        slot
    }

    /// Bit `i` set where entry `i` holds `spi`.
    fn matches(&self, spi: u32) -> u32 {
        let mut bits = 0;
        for i in 0..WAYS {
            bits |= u32::from((self.spis[i] == spi) & (self.slots[i] != FREE_SLOT)) << i;
        }
        bits
    }

    /// Bit `i` set where entry `i` is free.
    #[inline]
    fn free(&self) -> u32 {
        let mut bits = 0;
        for i in 0..WAYS {
            bits |= u32::from(self.slots[i] == FREE_SLOT) << i;
        }
        bits
    }
}

/// Where an entry is: bucket and way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    bucket: usize,
    way: usize,
}

/// SPI to slab index.
#[derive(Clone)]
pub(crate) struct SpiTable {
    /// A power of two long, never more than half the entries used.
    buckets: Box<[Bucket]>,
    /// 64 minus log2 of the number of buckets: the hash's high bits pick
    /// the bucket.
    shift: u32,
    len: usize,
}

impl core::fmt::Debug for SpiTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SpiTable")
            .field("len", &self.len)
            .field("buckets", &self.buckets.len())
            .finish()
    }
}

impl Default for SpiTable {
    fn default() -> Self {
        Self::with_buckets(MIN_BUCKETS)
    }
}

impl SpiTable {
    fn with_buckets(buckets: usize) -> Self {
        debug_assert!(buckets.is_power_of_two() && buckets >= MIN_BUCKETS);
        SpiTable {
            buckets: vec![EMPTY_BUCKET; buckets].into_boxed_slice(),
            shift: 64 - buckets.trailing_zeros(),
            len: 0,
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    /// The bucket where the probe for `spi` starts: multiply, fold the
    /// high half down, multiply again and take the high bits. One
    /// multiplication alone clusters SPIs that differ only in their high
    /// bits (strides of 2^16).
    #[inline]
    fn home(&self, spi: u32) -> usize {
        let h = u64::from(spi).wrapping_mul(HASH_MULTIPLIERS[0]);
        ((h ^ h >> 32).wrapping_mul(HASH_MULTIPLIERS[1]) >> self.shift) as usize
    }

    /// Buckets from `from` forward to `to`, cyclically.
    #[inline]
    fn distance(&self, from: usize, to: usize) -> usize {
        to.wrapping_sub(from) & self.mask()
    }

    /// Where `spi` is, or `Err` with the first free entry on its probe
    /// sequence (for changes; [`SpiTable::get`] is the lookup).
    /// Terminates because at least half the entries are free.
    fn find(&self, spi: u32) -> Result<At, At> {
        let mask = self.mask();
        let mut bucket = self.home(spi);
        loop {
            let b = &self.buckets[bucket];
            let hits = b.matches(spi);
            if hits != 0 {
                let way = hits.trailing_zeros() as usize;
                return Ok(At { bucket, way });
            }
            let free = b.free();
            if free != 0 {
                let way = free.trailing_zeros() as usize;
                return Err(At { bucket, way });
            }
            bucket = (bucket + 1) & mask;
        }
    }

    fn set(&mut self, at: At, spi: u32, slot: u32) {
        let b = &mut self.buckets[at.bucket];
        b.spis[at.way] = spi;
        b.slots[at.way] = slot;
    }

    /// The slot index of the SA with `spi`.
    #[inline]
    pub(crate) fn get(&self, spi: u32) -> Option<u32> {
        let mask = self.mask();
        let mut bucket = self.home(spi);
        loop {
            let b = &self.buckets[bucket];
            let slot = b.slot_of(spi);
            if slot != FREE_SLOT {
                return Some(slot);
            }
            if b.free() != 0 {
                return None;
            }
            bucket = (bucket + 1) & mask;
        }
    }

    /// Maps `spi` to `slot`, returning the slot it mapped to before.
    /// Doubles the table (a rehash, at install time only) when it would
    /// be more than half full.
    pub(crate) fn insert(&mut self, spi: u32, slot: u32) -> Option<u32> {
        debug_assert_ne!(slot, FREE_SLOT, "slot index reserved for free entries");
        let free = match self.find(spi) {
            Ok(at) => {
                let old = &mut self.buckets[at.bucket].slots[at.way];
                return Some(core::mem::replace(old, slot));
            }
            Err(free) => free,
        };
        let free = if (self.len + 1) * 2 > self.buckets.len() * WAYS {
            self.grow();
            // Still absent: the free entry of its probe in the new table.
            match self.find(spi) {
                Ok(at) | Err(at) => at,
            }
        } else {
            free
        };
        self.set(free, spi, slot);
        self.len += 1;
        None
    }

    fn grow(&mut self) {
        let bigger = Self::with_buckets(self.buckets.len() * 2);
        let old = core::mem::replace(self, bigger);
        for b in old.buckets.iter() {
            for way in 0..WAYS {
                if b.slots[way] != FREE_SLOT {
                    if let Err(free) = self.find(b.spis[way]) {
                        self.set(free, b.spis[way], b.slots[way]);
                    }
                }
            }
        }
        self.len = old.len;
    }

    /// Removes `spi`, returning its slot index.
    ///
    /// A lookup stops at the first bucket with a free entry, so the hole
    /// must not cut off an SPI stored further on whose probe passed the
    /// hole's bucket (every bucket from an SPI's home up to where it is
    /// stays full). Such an SPI can only sit in the run of full buckets
    /// after the hole and in the bucket that ends the run; one of them is
    /// moved into the hole, which moves the hole to its old place, and the
    /// scan goes on from there.
    pub(crate) fn remove(&mut self, spi: u32) -> Option<u32> {
        let mut hole = self.find(spi).ok()?;
        let removed = self.buckets[hole.bucket].slots[hole.way];
        self.set(hole, 0, FREE_SLOT);
        let mask = self.mask();
        let mut bucket = (hole.bucket + 1) & mask;
        loop {
            let b = self.buckets[bucket];
            let was_full = b.free() == 0;
            let passed_hole = (0..WAYS).find(|way| {
                b.slots[*way] != FREE_SLOT
                    && self.distance(self.home(b.spis[*way]), bucket)
                        >= self.distance(hole.bucket, bucket)
            });
            if let Some(way) = passed_hole {
                self.set(hole, b.spis[way], b.slots[way]);
                hole = At { bucket, way };
                self.set(hole, 0, FREE_SLOT);
            }
            // A bucket with room ends every probe that reaches it.
            if !was_full {
                break;
            }
            bucket = (bucket + 1) & mask;
        }
        self.len -= 1;
        Some(removed)
    }

    /// Number of SPIs mapped.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every mapped SPI with where it is.
    #[cfg(test)]
    fn entries(&self) -> impl Iterator<Item = (At, u32, u32)> + '_ {
        self.buckets.iter().enumerate().flat_map(|(bucket, b)| {
            (0..WAYS)
                .filter(move |way| b.slots[*way] != FREE_SLOT)
                .map(move |way| (At { bucket, way }, b.spis[way], b.slots[way]))
        })
    }

    /// Buckets read to find each mapped SPI, summed; a test's measure of
    /// how well the hash spreads a pattern of SPIs.
    #[cfg(test)]
    fn total_probe_length(&self) -> usize {
        self.entries()
            .map(|(at, spi, _)| self.distance(self.home(spi), at.bucket) + 1)
            .sum()
    }

    /// Every bucket from an SPI's home to the one before where it is is
    /// full, every SPI is found, and the count and load bound hold.
    #[cfg(test)]
    fn check_invariants(&self) {
        assert_eq!(self.entries().count(), self.len);
        assert!(self.len * 2 <= self.buckets.len() * WAYS);
        let mut seen = std::collections::HashSet::new();
        for (at, spi, slot) in self.entries() {
            assert!(seen.insert(spi), "SPI {spi:#x} twice");
            let mut b = self.home(spi);
            while b != at.bucket {
                assert_eq!(
                    self.buckets[b].free(),
                    0,
                    "SPI {spi:#x} passed a bucket with room"
                );
                b = (b + 1) & self.mask();
            }
            assert_eq!(self.get(spi), Some(slot), "SPI {spi:#x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// `n` SPIs from `from` up whose home in `table` is `bucket`.
    fn homed_at(table: &SpiTable, bucket: usize, from: u32, n: usize) -> Vec<u32> {
        (from..)
            .filter(|s| table.home(*s) == bucket)
            .take(n)
            .collect()
    }

    #[test]
    fn insert_get_replace_remove_reinsert() {
        let mut t = SpiTable::default();
        assert_eq!(t.get(0x100), None);
        assert_eq!(t.insert(0x100, 7), None);
        assert_eq!(t.get(0x100), Some(7));
        assert_eq!(t.insert(0x100, 9), Some(7));
        assert_eq!(t.get(0x100), Some(9));
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove(0x100), Some(9));
        assert_eq!(t.remove(0x100), None);
        assert_eq!(t.get(0x100), None);
        assert_eq!(t.len(), 0);
        assert_eq!(t.insert(0x100, 3), None);
        assert_eq!(t.get(0x100), Some(3));
        t.check_invariants();
    }

    #[test]
    fn spi_zero_and_max_are_ordinary_keys() {
        let mut t = SpiTable::default();
        // A free entry's SPI field is 0: a lookup of SPI 0 must not take
        // it for a hit.
        assert_eq!(t.get(0), None);
        assert_eq!(t.remove(0), None);
        t.insert(0, 1);
        t.insert(u32::MAX, 2);
        assert_eq!(t.get(0), Some(1));
        assert_eq!(t.get(u32::MAX), Some(2));
        assert_eq!(t.remove(0), Some(1));
        assert_eq!(t.get(0), None);
        assert_eq!(t.get(u32::MAX), Some(2));
        // Slot 0 is a slot like any other.
        t.insert(5, 0);
        assert_eq!(t.get(5), Some(0));
        t.check_invariants();
    }

    #[test]
    fn an_overflowing_bucket_spills_into_the_next_and_removal_pulls_back() {
        let mut t = SpiTable::with_buckets(8);
        let spis = homed_at(&t, 3, 0x1000, 20);
        for (i, spi) in spis.iter().enumerate() {
            t.insert(*spi, i as u32);
        }
        assert_eq!(t.buckets.len(), 8, "20 of 64 needs no growth");
        assert_eq!(t.buckets[3].free(), 0);
        assert_eq!(t.buckets[4].free(), 0);
        assert_eq!(t.buckets[5].free().count_ones(), 4);
        t.check_invariants();
        // Remove from the home bucket, then from the ones spilled into.
        for &k in &[0usize, 10, 19, 5, 1, 2, 3] {
            assert_eq!(t.remove(spis[k]), Some(k as u32));
            t.check_invariants();
        }
        assert_eq!(t.buckets[5].free(), 0xff, "the last spill moved back");
        for (i, spi) in spis.iter().enumerate() {
            let expect = (![0, 10, 19, 5, 1, 2, 3].contains(&i)).then_some(i as u32);
            assert_eq!(t.get(*spi), expect);
        }
    }

    #[test]
    fn a_run_that_wraps_past_the_end_moves_back_across_it() {
        let mut t = SpiTable::with_buckets(8);
        let last = t.mask();
        let at_end = homed_at(&t, last, 0, 10);
        let at_start = homed_at(&t, 0, 0, 8);
        // at_end fills the last bucket and two ways of bucket 0; at_start
        // fills the rest of bucket 0 and two ways of bucket 1.
        for (i, spi) in at_end.iter().chain(&at_start).enumerate() {
            t.insert(*spi, i as u32);
        }
        assert_eq!(t.buckets[1].free().count_ones(), 6);
        t.check_invariants();
        // A hole in the last bucket pulls an SPI of home `last` back from
        // bucket 0, whose hole pulls one of home 0 back from bucket 1.
        t.remove(at_end[0]);
        t.check_invariants();
        assert_eq!(t.buckets[last].free(), 0);
        assert_eq!(t.buckets[0].free(), 0);
        assert_eq!(t.buckets[1].free().count_ones(), 7);
        let home_end_in_0 = (0..WAYS)
            .filter(|w| t.home(t.buckets[0].spis[*w]) == last)
            .count();
        assert_eq!(home_end_in_0, 1);
    }

    #[test]
    fn spis_at_home_stay_when_an_earlier_bucket_gets_a_hole() {
        let mut t = SpiTable::with_buckets(8);
        let first = homed_at(&t, 2, 0, 9);
        let second = homed_at(&t, 3, 0, 7);
        // first fills bucket 2 and spills one into bucket 3, which second
        // fills.
        for (i, spi) in first.iter().chain(&second).enumerate() {
            t.insert(*spi, i as u32);
        }
        assert_eq!(t.buckets[3].free(), 0);
        t.remove(first[0]);
        t.check_invariants();
        // Only the spilled SPI moved back; bucket 3 keeps its own.
        assert_eq!(t.buckets[2].free(), 0);
        assert_eq!(t.buckets[3].free().count_ones(), 1);
        for spi in &second {
            let (at, _, _) = t.entries().find(|(_, s, _)| s == spi).expect("present");
            assert_eq!(at.bucket, 3);
        }
    }

    #[test]
    fn grows_at_half_load_and_keeps_every_mapping() {
        let mut t = SpiTable::default();
        for i in 0..10_000u32 {
            t.insert(i.wrapping_mul(0x0100_0193), i);
            assert!(t.len() * 2 <= t.buckets.len() * WAYS);
        }
        assert_eq!(t.buckets.len() * WAYS, 32_768);
        for i in 0..10_000u32 {
            assert_eq!(t.get(i.wrapping_mul(0x0100_0193)), Some(i));
        }
        t.check_invariants();
    }

    #[test]
    fn common_spi_patterns_spread_evenly() {
        // Sequential SPIs, strides and other patterns of hand-written
        // configurations, and multiples of a constant (the lookup bench's
        // SPIs), must not pile up: at half load on a uniform hash, about
        // 1.03 buckets are read per present SPI on average.
        type Pattern = (&'static str, fn(u32) -> u32);
        let patterns: [Pattern; 6] = [
            ("sequential from 256", |i| 256 + i),
            ("stride 2^8", |i| i << 8),
            ("stride 2^16", |i| i << 16),
            ("stride 2^17 plus a constant", |i| i << 17 | 0x1234),
            ("both halves the same", |i| i << 16 | i),
            ("golden multiples", |i| {
                (i.wrapping_mul(0x9e37_79b1) & 0x7fff_ffff) | 1 << 31
            }),
        ];
        for (name, spi) in patterns {
            let mut t = SpiTable::default();
            let n = 1u32 << 15;
            for i in 0..n {
                t.insert(spi(i), i);
            }
            let mean = t.total_probe_length() as f64 / f64::from(n);
            assert!(mean < 1.1, "{name}: {mean} buckets per lookup");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, u32),
        Remove(u32),
    }

    /// SPIs from a small range so operations hit the same keys often, and
    /// the extremes.
    fn spi() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..64, Just(u32::MAX), Just(u32::MAX - 1), any::<u32>()]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (spi(), 0u32..1_000_000).prop_map(|(s, i)| Op::Insert(s, i)),
            spi().prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map(ops in proptest::collection::vec(op(), 0..400)) {
            let mut t = SpiTable::default();
            let mut model: HashMap<u32, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(s, i) => prop_assert_eq!(t.insert(s, i), model.insert(s, i)),
                    Op::Remove(s) => prop_assert_eq!(t.remove(s), model.remove(&s)),
                }
                prop_assert_eq!(t.len(), model.len());
            }
            t.check_invariants();
            for (s, i) in &model {
                prop_assert_eq!(t.get(*s), Some(*i));
            }
            for s in 0u32..64 {
                prop_assert_eq!(t.get(s), model.get(&s).copied());
            }
        }

        #[test]
        fn crowded_buckets_behave_like_a_hash_map(
            ops in proptest::collection::vec((0usize..32, any::<bool>(), 0u32..100), 0..300)
        ) {
            // Every key's home is one of three neighbouring buckets, the
            // last and the first two of a table that stays at 8 buckets,
            // so buckets overflow, runs wrap past the end and removals
            // pull entries back across it.
            let mut t = SpiTable::with_buckets(8);
            let last = t.mask();
            let mut keys = homed_at(&t, last, 0, 12);
            keys.extend(homed_at(&t, 0, 0, 12));
            keys.extend(homed_at(&t, 1, 0, 8));
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (k, insert, slot) in ops {
                let spi = keys[k];
                if insert {
                    prop_assert_eq!(t.insert(spi, slot), model.insert(spi, slot));
                } else {
                    prop_assert_eq!(t.remove(spi), model.remove(&spi));
                }
                prop_assert_eq!(t.buckets.len(), 8);
                t.check_invariants();
            }
            for spi in &keys {
                prop_assert_eq!(t.get(*spi), model.get(spi).copied());
            }
        }
    }
}
