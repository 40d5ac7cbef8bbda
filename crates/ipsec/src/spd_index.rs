//! An index over one ordered SPD direction that answers "which entry
//! matches first" (RFC 4301 4.4.1: the SPD is ordered and the first entry
//! whose selectors match decides) without scanning every entry, and gives
//! exactly the answer a linear first-match scan gives.
//!
//! # Layout
//!
//! Every entry lands in exactly one of three places:
//!
//! 1. The **remote index** of its remote address family, if its remote
//!    selector is a range that is *narrow* (see below).
//! 2. Otherwise the **local index** of its local address family, if its
//!    local selector is a narrow range (remote = ANY, or a remote range too
//!    wide to copy around).
//! 3. Otherwise the **residual** lists (wide on both addresses, e.g.
//!    any/any defaults and protocol-only entries), split by the protocol the
//!    entry names, with one list for entries of any protocol.
//!
//! An address index (one per dimension and family) cuts the address line
//! into elementary intervals at every range endpoint of its entries (`lo`
//! and `hi + 1`), so every entry covers each interval wholly or not at all.
//! Each interval keeps the ascending list of positions of the entries that
//! cover it. An entry that would be copied into more than `max_copies`
//! intervals ([`DEFAULT_MAX_COPIES`] unless set with
//! [`SpdIndex::with_max_copies`]) is *wide* in that dimension and is passed
//! on to the next place; this bounds the stored positions by
//! `max_copies` per entry and dimension.
//!
//! Because the families are indexed apart, an ANY address selector belongs
//! to both families on that dimension: such an entry is simply not in that
//! dimension's index and is found through the other one or the residual.
//!
//! # Lookup
//!
//! A flow key yields at most four ascending candidate lists: the remote
//! index's interval holding `key.remote` (binary search), the local index's
//! interval holding `key.local`, the residual entries of any protocol and
//! those of `key.proto`. Every entry that can match the key is in one of
//! them. The lists are walked as a merge: each list is scanned in order
//! until its first full [`Selector::matches`] hit or until it reaches a
//! position not below the best hit so far, and the lowest hit wins. That is
//! the first match of the whole ordered list, so shadowing and ordering
//! behave exactly as in the linear scan. Lookup does not allocate.
//!
//! # Complexity
//!
//! With `n` entries and `K = max_copies`: build takes `O(n log n + n K)`
//! time and `O(n K)` memory in the worst case (`O(n)` for typical SPDs of
//! hosts and disjoint subnets). Lookup takes two binary searches over at
//! most `2n + 1` interval starts, `O(log n)`, plus one selector match per
//! candidate it looks at before the first match; candidates are the entries
//! that overlap the key's interval in one dimension plus the residual, so a
//! lookup slows down only for many entries stacked on the same addresses or
//! many entries wide on both addresses.

use crate::selector::{AddrSel, Family, FlowKey, ProtoSel, Selector};

/// The default bound on how many elementary intervals of one dimension an
/// entry may be copied into before it counts as wide there.
pub const DEFAULT_MAX_COPIES: usize = 32;

/// First-match index over an ordered list of selectors (one SPD direction).
#[derive(Debug, Clone)]
pub struct SpdIndex {
    selectors: Vec<Selector>,
    /// Indexed on the remote address, by family (`family_slot`).
    remote: [IntervalIndex; 2],
    /// Indexed on the local address, by family.
    local: [IntervalIndex; 2],
    /// Wide on both addresses, protocol ANY.
    residual_any: Vec<u32>,
    /// Wide on both addresses, by the protocol number the entry names.
    residual_proto: Vec<Vec<u32>>,
    stats: SpdIndexStats,
}

/// Where the entries of an [`SpdIndex`] went, for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpdIndexStats {
    /// Entries held in a remote-address index.
    pub by_remote: usize,
    /// Entries held in a local-address index.
    pub by_local: usize,
    /// Entries held in the residual lists.
    pub residual: usize,
    /// Elementary intervals over all address indexes.
    pub intervals: usize,
    /// Positions stored over all address indexes (an entry counts once per
    /// interval it covers).
    pub stored_positions: usize,
}

/// Slot of a family in the per-family arrays.
#[inline]
fn family_slot(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// One address dimension of one family: elementary intervals and, for each,
/// the ascending positions of the entries covering it.
#[derive(Debug, Clone, Default)]
struct IntervalIndex {
    /// Sorted, distinct interval starts; `starts[0] == 0` when not empty.
    /// Interval `i` is `starts[i]..starts[i + 1]` (the last is open-ended).
    starts: Vec<u128>,
    /// `positions[offsets[i]..offsets[i + 1]]` cover interval `i`;
    /// `offsets.len() == starts.len() + 1` when not empty.
    offsets: Vec<usize>,
    /// Entry positions, ascending within each interval.
    positions: Vec<u32>,
}

/// An entry offered to an address index: its position and address range.
#[derive(Debug, Clone, Copy)]
struct Item {
    pos: u32,
    lo: u128,
    hi: u128,
}

impl IntervalIndex {
    /// Interval starts for `items`: 0, every `lo` and every `hi + 1`.
    fn boundaries(items: &[Item]) -> Vec<u128> {
        let mut starts = Vec::with_capacity(2 * items.len() + 1);
        starts.push(0);
        for it in items {
            starts.push(it.lo);
            if let Some(next) = it.hi.checked_add(1) {
                starts.push(next);
            }
        }
        starts.sort_unstable();
        starts.dedup();
        starts
    }

    /// The first and last interval a range covers; `lo` and `hi + 1` must
    /// be among `starts`.
    fn span(starts: &[u128], lo: u128, hi: u128) -> (usize, usize) {
        let first = starts.partition_point(|&s| s <= lo) - 1;
        let last = starts.partition_point(|&s| s <= hi) - 1;
        (first, last)
    }

    /// Builds the index over `items` (in ascending position order) and
    /// returns it with the positions of the items too wide for it, in
    /// ascending order.
    fn build(items: &[Item], max_copies: usize) -> (Self, Vec<u32>) {
        if items.is_empty() {
            return (Self::default(), Vec::new());
        }
        let starts = Self::boundaries(items);
        let mut narrow = Vec::with_capacity(items.len());
        let mut wide = Vec::new();
        for &it in items {
            let (first, last) = Self::span(&starts, it.lo, it.hi);
            if last - first < max_copies {
                narrow.push(it);
            } else {
                wide.push(it.pos);
            }
        }
        if narrow.is_empty() {
            return (Self::default(), wide);
        }
        // Cut again at the narrow items' endpoints only: a subset of the
        // boundaries, so no narrow item covers more intervals than before.
        let starts = Self::boundaries(&narrow);
        let spans: Vec<(usize, usize)> = narrow
            .iter()
            .map(|it| Self::span(&starts, it.lo, it.hi))
            .collect();
        let mut offsets = vec![0usize; starts.len() + 1];
        for &(first, last) in &spans {
            for count in &mut offsets[first + 1..=last + 1] {
                *count += 1;
            }
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut fill = offsets[..starts.len()].to_vec();
        let mut positions = vec![0u32; offsets[starts.len()]];
        // Items come in ascending position order, so each interval's list
        // comes out ascending.
        for (it, &(first, last)) in narrow.iter().zip(&spans) {
            for at in &mut fill[first..=last] {
                positions[*at] = it.pos;
                *at += 1;
            }
        }
        (
            IntervalIndex {
                starts,
                offsets,
                positions,
            },
            wide,
        )
    }

    /// Positions of the entries whose range covers `x`, ascending.
    #[inline]
    fn stab(&self, x: u128) -> &[u32] {
        let i = self.starts.partition_point(|&s| s <= x);
        if i == 0 {
            return &[];
        }
        &self.positions[self.offsets[i - 1]..self.offsets[i]]
    }

    fn intervals(&self) -> usize {
        self.starts.len()
    }
}

/// The range of `sel` if it is one of `family`.
fn range_of(sel: &AddrSel, family: Family) -> Option<(u128, u128)> {
    match *sel {
        AddrSel::Range { family: f, lo, hi } if f == family => Some((lo, hi)),
        _ => None,
    }
}

impl SpdIndex {
    /// Builds the index over `selectors` in priority order (position 0
    /// first).
    ///
    /// # Panics
    ///
    /// If there are `u32::MAX` selectors or more.
    pub fn new(selectors: Vec<Selector>) -> Self {
        Self::with_max_copies(selectors, DEFAULT_MAX_COPIES)
    }

    /// Like [`SpdIndex::new`], with the bound on how many elementary
    /// intervals of one address dimension an entry may be copied into
    /// before it counts as wide there (at least 1). Smaller saves memory
    /// for heavily overlapping SPDs, larger keeps more entries out of the
    /// residual lists.
    ///
    /// # Panics
    ///
    /// If there are `u32::MAX` selectors or more.
    pub fn with_max_copies(selectors: Vec<Selector>, max_copies: usize) -> Self {
        let max_copies = max_copies.max(1);
        assert!(
            selectors.len() < u32::MAX as usize,
            "SpdIndex holds fewer than u32::MAX selectors"
        );
        let families = [Family::V4, Family::V6];
        let mut stats = SpdIndexStats::default();

        // Remote dimension: every entry with a remote range.
        let mut remote: [IntervalIndex; 2] = Default::default();
        let mut to_local: Vec<u32> = Vec::new();
        for family in families {
            let items: Vec<Item> = selectors
                .iter()
                .enumerate()
                .filter_map(|(pos, s)| {
                    range_of(&s.remote, family).map(|(lo, hi)| Item {
                        pos: pos as u32,
                        lo,
                        hi,
                    })
                })
                .collect();
            let (index, wide) = IntervalIndex::build(&items, max_copies);
            stats.by_remote += items.len() - wide.len();
            to_local.extend(wide);
            remote[family_slot(family)] = index;
        }
        to_local.extend(
            selectors
                .iter()
                .enumerate()
                .filter(|(_, s)| s.remote == AddrSel::Any)
                .map(|(pos, _)| pos as u32),
        );
        to_local.sort_unstable();

        // Local dimension: what the remote dimension did not take.
        let mut local: [IntervalIndex; 2] = Default::default();
        let mut residual: Vec<u32> = Vec::new();
        for family in families {
            let items: Vec<Item> = to_local
                .iter()
                .filter_map(|&pos| {
                    range_of(&selectors[pos as usize].local, family).map(|(lo, hi)| Item {
                        pos,
                        lo,
                        hi,
                    })
                })
                .collect();
            let (index, wide) = IntervalIndex::build(&items, max_copies);
            stats.by_local += items.len() - wide.len();
            residual.extend(wide);
            local[family_slot(family)] = index;
        }
        residual.extend(
            to_local
                .iter()
                .copied()
                .filter(|&pos| selectors[pos as usize].local == AddrSel::Any),
        );
        residual.sort_unstable();
        stats.residual = residual.len();

        // Residual: by protocol.
        let mut residual_any = Vec::new();
        let mut residual_proto = vec![Vec::new(); 256];
        for pos in residual {
            match selectors[pos as usize].proto {
                ProtoSel::Any => residual_any.push(pos),
                ProtoSel::Is(p) => residual_proto[usize::from(p)].push(pos),
            }
        }

        for index in remote.iter().chain(&local) {
            stats.intervals += index.intervals();
            stats.stored_positions += index.positions.len();
        }
        SpdIndex {
            selectors,
            remote,
            local,
            residual_any,
            residual_proto,
            stats,
        }
    }

    /// Position of the first selector that matches `key`, as
    /// [`Selector::matches`] decides.
    pub fn lookup(&self, key: &FlowKey) -> Option<usize> {
        let lists: [&[u32]; 4] = [
            self.remote[family_slot(key.remote.family)].stab(key.remote.bits),
            self.local[family_slot(key.local.family)].stab(key.local.bits),
            &self.residual_any,
            &self.residual_proto[usize::from(key.proto)],
        ];
        // Positions are below u32::MAX, so it stands for "none yet".
        let mut best = u32::MAX;
        for list in lists {
            for &pos in list {
                if pos >= best {
                    break;
                }
                if self.selectors[pos as usize].matches(key) {
                    best = pos;
                    break;
                }
            }
        }
        (best != u32::MAX).then_some(best as usize)
    }

    /// Number of selectors.
    pub fn len(&self) -> usize {
        self.selectors.len()
    }

    /// Whether there are no selectors.
    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    /// The selectors, in priority order.
    pub fn selectors(&self) -> &[Selector] {
        &self.selectors
    }

    /// Where the entries went.
    pub fn stats(&self) -> SpdIndexStats {
        self.stats
    }
}
