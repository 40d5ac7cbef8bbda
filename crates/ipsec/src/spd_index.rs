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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::selector::{proto, Addr, NextLayer, Range16};
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn pfx(s: &str, len: u8) -> AddrSel {
        AddrSel::prefix(ip(s), len).expect("test prefix")
    }

    fn range(lo: &str, hi: &str) -> AddrSel {
        AddrSel::range(ip(lo), ip(hi)).expect("test range")
    }

    fn key(local: &str, remote: &str, proto: u8, next: NextLayer) -> FlowKey {
        FlowKey {
            local: ip(local).into(),
            remote: ip(remote).into(),
            proto,
            next,
        }
    }

    fn linear(selectors: &[Selector], k: &FlowKey) -> Option<usize> {
        selectors.iter().position(|s| s.matches(k))
    }

    /// Looks `k` up with several width bounds, checks each against the
    /// linear scan and returns the answer.
    fn look(selectors: &[Selector], k: &FlowKey) -> Option<usize> {
        let want = linear(selectors, k);
        for max_copies in [1, 2, 3, DEFAULT_MAX_COPIES] {
            let index = SpdIndex::with_max_copies(selectors.to_vec(), max_copies);
            assert_eq!(index.lookup(k), want, "max_copies {max_copies}, key {k:?}");
        }
        want
    }

    fn to_remote(remote: AddrSel) -> Selector {
        Selector {
            remote,
            ..Selector::ANY
        }
    }

    #[test]
    fn empty_index() {
        let index = SpdIndex::new(Vec::new());
        assert!(index.is_empty());
        assert_eq!(index.len(), 0);
        assert_eq!(
            index.lookup(&key("192.0.2.1", "198.51.100.1", 6, NextLayer::None)),
            None
        );
    }

    #[test]
    fn narrow_after_wide_is_shadowed() {
        let host = to_remote(AddrSel::single(ip("10.1.2.3")));
        let net = to_remote(pfx("10.0.0.0", 8));
        let k_host = key("192.0.2.1", "10.1.2.3", proto::UDP, NextLayer::None);
        let k_net = key("192.0.2.1", "10.9.9.9", proto::UDP, NextLayer::None);
        let k_out = key("192.0.2.1", "11.0.0.0", proto::UDP, NextLayer::None);

        let wide_first = vec![net, host];
        assert_eq!(look(&wide_first, &k_host), Some(0));
        assert_eq!(look(&wide_first, &k_net), Some(0));
        assert_eq!(look(&wide_first, &k_out), None);

        let narrow_first = vec![host, net];
        assert_eq!(look(&narrow_first, &k_host), Some(0));
        assert_eq!(look(&narrow_first, &k_net), Some(1));
        assert_eq!(look(&narrow_first, &k_out), None);
    }

    #[test]
    fn wide_entries_on_both_addresses_keep_their_order() {
        // Entry 0 is wide on both dimensions (lands in the residual), entry
        // 1 is narrow on remote, entry 2 only on local.
        let mut selectors = Vec::new();
        for i in 0..8u8 {
            selectors.push(to_remote(AddrSel::single(IpAddr::from([10, 0, 0, i]))));
        }
        selectors.push(Selector {
            local: AddrSel::single(ip("192.0.2.1")),
            ..Selector::ANY
        });
        selectors.insert(
            0,
            Selector {
                local: pfx("192.0.2.0", 24),
                remote: pfx("10.0.0.0", 24),
                proto: ProtoSel::Is(proto::TCP),
                ..Selector::ANY
            },
        );
        let index = SpdIndex::with_max_copies(selectors.clone(), 2);
        assert_eq!(index.stats().residual, 1);
        assert_eq!(index.stats().by_local, 1);
        assert_eq!(index.stats().by_remote, 8);
        let tcp = key("192.0.2.1", "10.0.0.3", proto::TCP, NextLayer::None);
        let udp = key("192.0.2.1", "10.0.0.3", proto::UDP, NextLayer::None);
        let udp_far = key("192.0.2.1", "10.0.9.3", proto::UDP, NextLayer::None);
        assert_eq!(look(&selectors, &tcp), Some(0));
        assert_eq!(look(&selectors, &udp), Some(4));
        assert_eq!(look(&selectors, &udp_far), Some(9));
    }

    #[test]
    fn any_any_default_at_the_end() {
        let selectors = vec![
            to_remote(pfx("198.51.100.0", 24)),
            to_remote(pfx("2001:db8:1::", 48)),
            Selector {
                local: AddrSel::single(ip("2001:db8::1")),
                ..Selector::ANY
            },
            Selector::ANY,
        ];
        let index = SpdIndex::new(selectors.clone());
        assert_eq!(index.len(), 4);
        assert_eq!(index.selectors(), &selectors[..]);
        let cases = [
            (key("192.0.2.1", "198.51.100.7", 6, NextLayer::None), 0),
            (key("2001:db8::9", "2001:db8:1::7", 6, NextLayer::None), 1),
            (key("2001:db8::1", "2001:db8:2::7", 6, NextLayer::None), 2),
            (key("192.0.2.1", "203.0.113.1", 6, NextLayer::Opaque), 3),
            (key("2001:db8::9", "2001:db8:2::7", 17, NextLayer::None), 3),
        ];
        for (k, want) in cases {
            assert_eq!(index.lookup(&k), Some(want), "{k:?}");
            assert_eq!(look(&selectors, &k), Some(want));
        }
    }

    #[test]
    fn families_are_kept_apart() {
        // The same low bits in both families.
        let selectors = vec![
            to_remote(pfx("0.0.0.0", 0)),
            Selector {
                local: pfx("::", 0),
                ..Selector::ANY
            },
            to_remote(AddrSel::single(ip("::c000:201"))),
        ];
        let v4 = key("192.0.2.1", "192.0.2.1", 6, NextLayer::None);
        let v6 = key("::c000:201", "::c000:201", 6, NextLayer::None);
        let v6_remote_only = key("192.0.2.1", "::c000:201", 6, NextLayer::None);
        let v4_remote_only = key("::1", "192.0.2.1", 6, NextLayer::None);
        assert_eq!(look(&selectors, &v4), Some(0));
        assert_eq!(look(&selectors, &v6), Some(1));
        assert_eq!(look(&selectors, &v6_remote_only), Some(2));
        assert_eq!(look(&selectors, &v4_remote_only), Some(0));
        let v6_only = vec![selectors[2]];
        assert_eq!(look(&v6_only, &v4), None);
    }

    #[test]
    fn mobility_header_types() {
        // The seed's host-wide entries: BU/BA by MH type before the payload.
        let hoa = AddrSel::single(ip("2001:db8:1::100"));
        let ha = AddrSel::single(ip("2001:db8:1::1"));
        let mh = |lo, hi| Selector {
            local: hoa,
            remote: ha,
            proto: ProtoSel::Is(proto::MH),
            mh_type: Range16 { lo, hi },
            ..Selector::ANY
        };
        let selectors = vec![
            mh(5, 5),
            mh(6, 6),
            mh(1, 4),
            Selector {
                local: hoa,
                proto: ProtoSel::Is(proto::MH),
                ..Selector::ANY
            },
            Selector {
                local: hoa,
                ..Selector::ANY
            },
        ];
        let k = |next| key("2001:db8:1::100", "2001:db8:1::1", proto::MH, next);
        assert_eq!(look(&selectors, &k(NextLayer::Mh { ty: 5 })), Some(0));
        assert_eq!(look(&selectors, &k(NextLayer::Mh { ty: 6 })), Some(1));
        assert_eq!(look(&selectors, &k(NextLayer::Mh { ty: 3 })), Some(2));
        assert_eq!(look(&selectors, &k(NextLayer::Mh { ty: 7 })), Some(3));
        // OPAQUE matches only selectors with ANY next-layer fields.
        assert_eq!(look(&selectors, &k(NextLayer::Opaque)), Some(3));
        let other = key(
            "2001:db8:1::100",
            "2001:db8:9::1",
            proto::MH,
            NextLayer::Mh { ty: 5 },
        );
        assert_eq!(look(&selectors, &other), Some(3));
        let tcp = key(
            "2001:db8:1::100",
            "2001:db8:1::1",
            proto::TCP,
            NextLayer::Ports {
                local: 1,
                remote: 2,
            },
        );
        assert_eq!(look(&selectors, &tcp), Some(4));
    }

    #[test]
    fn ports_and_icmp() {
        let peer = pfx("198.51.100.0", 24);
        let selectors = vec![
            Selector {
                remote: peer,
                proto: ProtoSel::Is(proto::TCP),
                remote_ports: Range16 { lo: 443, hi: 443 },
                ..Selector::ANY
            },
            Selector {
                remote: peer,
                proto: ProtoSel::Is(proto::TCP),
                local_ports: Range16 {
                    lo: 1024,
                    hi: 0xffff,
                },
                ..Selector::ANY
            },
            Selector {
                proto: ProtoSel::Is(proto::ICMP),
                icmp_type: Range16::single(8),
                ..Selector::ANY
            },
            Selector {
                remote: peer,
                ..Selector::ANY
            },
        ];
        let tcp = |l, r| {
            key(
                "192.0.2.1",
                "198.51.100.9",
                proto::TCP,
                NextLayer::Ports {
                    local: l,
                    remote: r,
                },
            )
        };
        assert_eq!(look(&selectors, &tcp(80, 443)), Some(0));
        assert_eq!(look(&selectors, &tcp(5000, 80)), Some(1));
        assert_eq!(look(&selectors, &tcp(80, 80)), Some(3));
        let icmp = |remote, ty| {
            key(
                "192.0.2.1",
                remote,
                proto::ICMP,
                NextLayer::Icmp { ty, code: 0 },
            )
        };
        assert_eq!(look(&selectors, &icmp("198.51.100.9", 8)), Some(2));
        assert_eq!(look(&selectors, &icmp("203.0.113.9", 8)), Some(2));
        assert_eq!(look(&selectors, &icmp("198.51.100.9", 0)), Some(3));
        assert_eq!(look(&selectors, &icmp("203.0.113.9", 0)), None);
    }

    #[test]
    fn ranges_that_are_not_prefixes_and_overlap() {
        let selectors = vec![
            to_remote(range("192.0.2.10", "192.0.2.20")),
            to_remote(range("192.0.2.15", "192.0.2.30")),
            to_remote(range("192.0.2.5", "192.0.2.40")),
            to_remote(range("2001:db8::ff", "2001:db8::1:0")),
        ];
        let at = |remote| key("192.0.2.1", remote, proto::UDP, NextLayer::None);
        let expect = [
            ("192.0.2.4", None),
            ("192.0.2.5", Some(2)),
            ("192.0.2.9", Some(2)),
            ("192.0.2.10", Some(0)),
            ("192.0.2.15", Some(0)),
            ("192.0.2.20", Some(0)),
            ("192.0.2.21", Some(1)),
            ("192.0.2.30", Some(1)),
            ("192.0.2.31", Some(2)),
            ("192.0.2.40", Some(2)),
            ("192.0.2.41", None),
            ("2001:db8::fe", None),
            ("2001:db8::ff", Some(3)),
            ("2001:db8::8000", Some(3)),
            ("2001:db8::1:0", Some(3)),
            ("2001:db8::1:1", None),
        ];
        for (remote, want) in expect {
            assert_eq!(look(&selectors, &at(remote)), want, "{remote}");
        }
    }

    #[test]
    fn top_of_the_address_space() {
        let selectors = vec![
            to_remote(range("255.255.255.250", "255.255.255.255")),
            to_remote(range("ffff::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            to_remote(pfx("::", 0)),
        ];
        let at = |remote| key("::1", remote, proto::UDP, NextLayer::None);
        assert_eq!(look(&selectors, &at("255.255.255.255")), Some(0));
        assert_eq!(look(&selectors, &at("255.255.255.249")), None);
        assert_eq!(
            look(&selectors, &at("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some(1)
        );
        assert_eq!(look(&selectors, &at("fffe::")), Some(2));
    }

    // Random SPDs over a small address universe, so that ranges overlap and
    // nest often, against the linear scan.

    const PROTOS: [u8; 7] = [
        proto::ICMP,
        proto::TCP,
        proto::UDP,
        proto::ICMPV6,
        proto::MH,
        proto::ESP,
        99,
    ];

    fn family_max(f: Family) -> u128 {
        match f {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        }
    }

    fn family() -> impl Strategy<Value = Family> {
        prop_oneof![Just(Family::V4), Just(Family::V6)]
    }

    fn addr_sel() -> impl Strategy<Value = AddrSel> {
        let in_family = (family(), 0u8..5, 0u128..24, 0u128..24, 0u32..5).prop_map(
            |(family, kind, a, b, host_bits)| {
                let max = family_max(family);
                let (lo, hi) = match kind {
                    // A single address.
                    0 => (a, a),
                    // A range.
                    1 => (a.min(b), a.max(b)),
                    // A prefix.
                    2 => {
                        let mask = (1u128 << host_bits) - 1;
                        (a & !mask, (a & !mask) | mask)
                    }
                    // The whole family.
                    3 => (0, max),
                    // The top of the family.
                    _ => (max - a.min(b), max - (a.min(b) / 2)),
                };
                AddrSel::Range { family, lo, hi }
            },
        );
        prop_oneof![1 => Just(AddrSel::Any), 4 => in_family]
    }

    fn small_range(max: u16) -> impl Strategy<Value = Range16> {
        prop_oneof![
            3 => Just(Range16 { lo: 0, hi: max }),
            1 => (0u16..8, 0u16..8).prop_map(|(a, b)| Range16 {
                lo: a.min(b),
                hi: a.max(b),
            }),
        ]
    }

    /// Random selectors over a small address universe (shared with the
    /// SPD's flow cache tests).
    pub(crate) fn selector() -> impl Strategy<Value = Selector> {
        (
            addr_sel(),
            addr_sel(),
            prop_oneof![
                1 => Just(ProtoSel::Any),
                2 => proptest::sample::select(&PROTOS[..]).prop_map(ProtoSel::Is),
            ],
            small_range(0xffff),
            small_range(0xffff),
            small_range(0xff),
            small_range(0xff),
            small_range(0xff),
        )
            .prop_map(|(local, remote, proto, lp, rp, it, ic, mh)| Selector {
                local,
                remote,
                proto,
                local_ports: lp,
                remote_ports: rp,
                icmp_type: it,
                icmp_code: ic,
                mh_type: mh,
            })
    }

    fn addr() -> impl Strategy<Value = Addr> {
        (family(), 0u128..26).prop_map(|(family, bits)| Addr { family, bits })
    }

    fn key_addr() -> impl Strategy<Value = Addr> {
        prop_oneof![
            4 => addr(),
            1 => (family(), 0u128..12).prop_map(|(family, d)| Addr {
                family,
                bits: family_max(family) - d,
            }),
        ]
    }

    fn next_layer() -> impl Strategy<Value = NextLayer> {
        prop_oneof![
            Just(NextLayer::Opaque),
            Just(NextLayer::None),
            (0u16..9, 0u16..9).prop_map(|(local, remote)| NextLayer::Ports { local, remote }),
            (0u8..9, 0u8..9).prop_map(|(ty, code)| NextLayer::Icmp { ty, code }),
            (0u8..9).prop_map(|ty| NextLayer::Mh { ty }),
        ]
    }

    /// Random flow keys in the universe of [`selector`].
    pub(crate) fn flow_key() -> impl Strategy<Value = FlowKey> {
        (
            key_addr(),
            key_addr(),
            proptest::sample::select(&PROTOS[..]),
            next_layer(),
        )
            .prop_map(|(local, remote, proto, next)| FlowKey {
                local,
                remote,
                proto,
                next,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn lookup_is_the_linear_first_match(
            selectors in proptest::collection::vec(selector(), 0..200),
            keys in proptest::collection::vec(flow_key(), 1..64),
            max_copies in prop_oneof![1usize..6, Just(DEFAULT_MAX_COPIES)],
        ) {
            let index = SpdIndex::with_max_copies(selectors.clone(), max_copies);
            let stats = index.stats();
            prop_assert_eq!(stats.by_remote + stats.by_local + stats.residual, selectors.len());
            for k in &keys {
                prop_assert_eq!(index.lookup(k), linear(&selectors, k), "key {:?}", k);
            }
        }
    }

    /// A small deterministic generator for the large SPD.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn v4(bits: u32, host_bits: u32) -> AddrSel {
        let mask = if host_bits == 32 {
            u32::MAX
        } else {
            (1u32 << host_bits) - 1
        };
        AddrSel::Range {
            family: Family::V4,
            lo: u128::from(bits & !mask),
            hi: u128::from(bits | mask),
        }
    }

    fn v6(bits: u128, host_bits: u32) -> AddrSel {
        let mask = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        AddrSel::Range {
            family: Family::V6,
            lo: bits & !mask,
            hi: bits | mask,
        }
    }

    /// A 100k-entry SPD in the mix a large site-to-site or mobility gateway
    /// sees: IPv4 hosts and /24s in 10/8, IPv6 hosts and /64s in
    /// 2001:db8::/32, some non-prefix ranges, per-port and MH-type entries,
    /// and a final any/any.
    fn large_spd(rng: &mut XorShift, n: usize) -> Vec<Selector> {
        let v4_base = 0x0a00_0000u32;
        let v6_base = 0x2001_0db8u128 << 96;
        let local_v4 = v4(0xc000_0200, 8);
        let local_v6 = v6(0x2001_0db8_ffff_u128 << 80, 64);
        let mut selectors = Vec::with_capacity(n);
        for _ in 0..n - 1 {
            let v4_addr = v4_base | (rng.next() as u32 & 0x00ff_ffff);
            let v6_addr =
                v6_base | u128::from(rng.next() & 0xffff_ffff) << 64 | u128::from(rng.next());
            let roll = rng.below(100);
            let sel = match roll {
                0..=34 => Selector {
                    local: if roll < 18 { local_v4 } else { AddrSel::Any },
                    remote: v4(v4_addr, 0),
                    ..Selector::ANY
                },
                35..=49 => to_remote(v4(v4_addr, 8)),
                50..=69 => Selector {
                    local: local_v6,
                    remote: v6(v6_addr, 0),
                    ..Selector::ANY
                },
                70..=79 => to_remote(v6(v6_addr, 64)),
                80..=84 => {
                    let lo = v4_addr;
                    let hi = lo.saturating_add(rng.below(1000) as u32);
                    to_remote(AddrSel::Range {
                        family: Family::V4,
                        lo: u128::from(lo),
                        hi: u128::from(hi),
                    })
                }
                85..=92 => Selector {
                    remote: v4(v4_addr, 0),
                    proto: ProtoSel::Is(proto::TCP),
                    remote_ports: Range16::single(rng.below(4) as u16 + 440),
                    ..Selector::ANY
                },
                // Mobile nodes' home addresses on the local side (inbound
                // view of an HA): remote ANY, indexed on local.
                93..=98 => Selector {
                    local: v6(v6_addr, 0),
                    ..Selector::ANY
                },
                _ => Selector {
                    local: v6(v6_addr, 0),
                    remote: v6(v6_base | 1, 0),
                    proto: ProtoSel::Is(proto::MH),
                    mh_type: Range16::single(rng.below(3) as u16 + 5),
                    ..Selector::ANY
                },
            };
            selectors.push(sel);
        }
        selectors.push(Selector::ANY);
        selectors
    }

    /// Some address inside `sel`, or a random one of `family` for ANY.
    fn inside(rng: &mut XorShift, sel: &AddrSel, family: Family) -> Addr {
        match *sel {
            AddrSel::Range { family, lo, hi } => Addr {
                family,
                bits: lo + u128::from(rng.next()) % (hi - lo).saturating_add(1).max(1),
            },
            AddrSel::Any => Addr {
                family,
                bits: u128::from(rng.next()) & family_max(family),
            },
        }
    }

    #[test]
    fn hundred_thousand_entries_agree_with_the_linear_scan() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let selectors = large_spd(&mut rng, 100_000);
        let index = SpdIndex::new(selectors.clone());
        assert_eq!(index.len(), 100_000);
        let stats = index.stats();
        assert_eq!(stats.by_remote + stats.by_local + stats.residual, 100_000);
        // Only the any/any default is wide on both addresses.
        assert_eq!(stats.residual, 1, "{stats:?}");
        let mut hits_before_default = 0;
        for i in 0..1500 {
            let k = if i % 3 == 2 {
                // Anywhere in the sites' address space.
                let family = if rng.below(2) == 0 {
                    Family::V4
                } else {
                    Family::V6
                };
                let base = match family {
                    Family::V4 => 0x0a00_0000u128,
                    Family::V6 => 0x2001_0db8u128 << 96,
                };
                FlowKey {
                    local: inside(&mut rng, &AddrSel::Any, family),
                    remote: Addr {
                        family,
                        bits: base | (u128::from(rng.next()) & 0x00ff_ffff),
                    },
                    proto: proto::UDP,
                    next: NextLayer::None,
                }
            } else {
                // A packet aimed at a random entry.
                let s = selectors[rng.below(selectors.len() as u64) as usize];
                let family = s.remote.family().or(s.local.family()).unwrap_or(Family::V4);
                let (proto, next) = match s.proto {
                    ProtoSel::Is(proto::MH) => (
                        proto::MH,
                        NextLayer::Mh {
                            ty: 4 + rng.below(4) as u8,
                        },
                    ),
                    ProtoSel::Is(p) => (
                        p,
                        NextLayer::Ports {
                            local: 1024,
                            remote: 439 + rng.below(6) as u16,
                        },
                    ),
                    ProtoSel::Any => (proto::ESP, NextLayer::Opaque),
                };
                FlowKey {
                    local: inside(&mut rng, &s.local, family),
                    remote: inside(&mut rng, &s.remote, family),
                    proto,
                    next,
                }
            };
            let want = linear(&selectors, &k);
            assert_eq!(index.lookup(&k), want, "key {k:?}");
            if want.is_some_and(|p| p + 1 < selectors.len()) {
                hits_before_default += 1;
            }
        }
        // The sample exercises real entries, not only the default.
        assert!(hits_before_default > 500, "{hits_before_default}");
    }
}
