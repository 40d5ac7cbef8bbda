//! Neighbor resolution for routed Ethernet ports: IPv4 ARP (RFC 826) and
//! IPv6 Neighbor Discovery (RFC 4861), sans-IO.
//!
//! One [`NeighborTable`] per side maps next-hop addresses to MAC addresses.
//! It learns from the ARP requests and replies and the Neighbor
//! Solicitations and Advertisements seen on its side (the sender's address
//! and link-layer address are gleaned, [`glean`]); it answers nothing
//! itself (the appliance's own endpoint answers for its addresses).
//!
//! A simplified RFC 4861 7.3 state machine:
//! - an unknown next hop gets an entry in the *incomplete* state: up to
//!   [`MAX_HELD`] packets wait in it, a solicitation (ARP request or NS) is
//!   due at once and repeated every [`RETRANS_TIMER`] up to
//!   [`MAX_SOLICIT`] times; without an answer [`RETRANS_TIMER`] after the
//!   last one, the entry and its packets are dropped (counted);
//! - an answer (or any gleaned frame from it) makes it *reachable* for
//!   [`REACHABLE_TIME`] and releases the held packets in order;
//! - a reachable entry used after that time goes on being used while it is
//!   *probed* (solicited again, like RFC 4861's STALE, DELAY and PROBE in
//!   one): an answer makes it reachable again, none after the retries
//!   removes it, and the next packet resolves it afresh.
//!
//! Nothing is allocated per packet once the table is warm: entries and
//! their hold buffers are recycled.

use bitsgw_wire::ether::{self, ETHERTYPE_ARP, ETHERTYPE_IPV6};
use bitsgw_wire::icmp::{
    ND_OPT_SOURCE_LL as OPT_SOURCE_LL, ND_OPT_TARGET_LL as OPT_TARGET_LL,
    V6_NEIGHBOR_ADVERTISEMENT as ICMPV6_NA, V6_NEIGHBOR_SOLICITATION as ICMPV6_NS,
};
use bitsgw_wire::{ip, proto, PacketBuf, Timestamp};
use core::time::Duration;
use std::net::IpAddr;

/// Packets held per unresolved next hop; more are dropped.
pub const MAX_HELD: usize = 4;
/// Time between solicitations (RFC 4861 10: RETRANS_TIMER).
pub const RETRANS_TIMER: Duration = Duration::from_secs(1);
/// Solicitations sent before giving up (RFC 4861 10: MAX_MULTICAST_SOLICIT).
pub const MAX_SOLICIT: u8 = 3;
/// How long an answer is trusted (RFC 4861 10: REACHABLE_TIME).
pub const REACHABLE_TIME: Duration = Duration::from_secs(30);
/// Entries per table by default.
pub const DEFAULT_CAPACITY: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No MAC yet: packets wait.
    Incomplete,
    /// The MAC was confirmed; trusted until `timer`.
    Reachable,
    /// The MAC is used while solicitations check it.
    Probing,
}

#[derive(Debug)]
struct Entry {
    addr: IpAddr,
    mac: [u8; 6],
    state: State,
    /// Reachable: until when. Incomplete and probing: when the next
    /// solicitation is due, or (after the last) when to give up.
    timer: Timestamp,
    /// Solicitations sent for this resolution.
    sent: u8,
    /// A solicitation is due now.
    solicit: bool,
    held: [Vec<u8>; MAX_HELD],
    /// Held packets: `held[first..len]`, oldest first.
    first: usize,
    len: usize,
}

impl Entry {
    fn blank() -> Self {
        Entry {
            addr: IpAddr::from([0u8; 4]),
            mac: [0; 6],
            state: State::Incomplete,
            timer: Timestamp::ZERO,
            sent: 0,
            solicit: false,
            held: Default::default(),
            first: 0,
            len: 0,
        }
    }

    fn held(&self) -> usize {
        self.len - self.first
    }
}

/// What the table has done, for counters and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeighborStats {
    /// Entries made or confirmed from frames seen on the link.
    pub learned: u64,
    /// ARP requests and Neighbor Solicitations asked for.
    pub solicitations: u64,
    /// Packets held while their next hop was resolved.
    pub held: u64,
    /// Held packets released after the answer.
    pub released: u64,
    /// Packets dropped because the hold was full (or the table).
    pub dropped_full: u64,
    /// Held packets dropped because no answer came.
    pub dropped_timeout: u64,
}

/// Why a packet could not be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldError {
    /// [`MAX_HELD`] packets already wait for this next hop.
    Full,
    /// Every entry is busy resolving another next hop.
    TableFull,
}

/// The neighbors of one side.
#[derive(Debug)]
pub struct NeighborTable {
    entries: Vec<Entry>,
    spare: Vec<Entry>,
    capacity: usize,
    /// Some entry has a solicitation due.
    solicit_due: bool,
    /// Some reachable entry has packets to release.
    release_due: bool,
    stats: NeighborStats,
}

impl Default for NeighborTable {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl NeighborTable {
    /// A table of at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        NeighborTable {
            entries: Vec::with_capacity(capacity),
            spare: Vec::with_capacity(capacity),
            capacity,
            solicit_due: false,
            release_due: false,
            stats: NeighborStats::default(),
        }
    }

    /// What the table has done.
    pub fn stats(&self) -> &NeighborStats {
        &self.stats
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, addr: IpAddr) -> Option<usize> {
        self.entries.iter().position(|e| e.addr == addr)
    }

    /// The MAC to send to `addr` now, if it is known. A reachable entry
    /// past its time is used and probed (a solicitation becomes due).
    pub fn lookup(&mut self, addr: IpAddr, now: Timestamp) -> Option<[u8; 6]> {
        let i = self.find(addr)?;
        let e = &mut self.entries[i];
        match e.state {
            State::Incomplete => None,
            State::Probing => Some(e.mac),
            State::Reachable => {
                if now >= e.timer {
                    e.state = State::Probing;
                    e.sent = 0;
                    e.solicit = true;
                    e.timer = now;
                    self.solicit_due = true;
                }
                Some(e.mac)
            }
        }
    }

    /// A free entry for `addr`: a recycled one, or the reachable or
    /// probing entry that expires first (none holds packets).
    fn new_entry(&mut self, addr: IpAddr) -> Option<usize> {
        if self.entries.len() >= self.capacity {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.state != State::Incomplete && e.held() == 0)
                .min_by_key(|(_, e)| e.timer)
                .map(|(i, _)| i)?;
            let e = self.entries.swap_remove(victim);
            self.spare.push(e);
        }
        let mut e = self.spare.pop().unwrap_or_else(Entry::blank);
        e.addr = addr;
        e.mac = [0; 6];
        e.state = State::Incomplete;
        e.timer = Timestamp::ZERO;
        e.sent = 0;
        e.solicit = false;
        e.first = 0;
        e.len = 0;
        self.entries.push(e);
        Some(self.entries.len() - 1)
    }

    /// Holds `pkt` (a raw IP packet) until `addr` is resolved; the first
    /// packet for an unknown next hop makes a solicitation due.
    pub fn hold(&mut self, addr: IpAddr, pkt: &[u8], now: Timestamp) -> Result<(), HoldError> {
        let i = match self.find(addr) {
            Some(i) => i,
            None => {
                let Some(i) = self.new_entry(addr) else {
                    self.stats.dropped_full += 1;
                    return Err(HoldError::TableFull);
                };
                let e = &mut self.entries[i];
                e.solicit = true;
                e.timer = now;
                self.solicit_due = true;
                i
            }
        };
        let e = &mut self.entries[i];
        if e.len == MAX_HELD {
            self.stats.dropped_full += 1;
            return Err(HoldError::Full);
        }
        let slot = &mut e.held[e.len];
        slot.clear();
        slot.extend_from_slice(pkt);
        e.len += 1;
        self.stats.held += 1;
        Ok(())
    }

    /// `addr` is at `mac` (an ARP or NDP frame said so). Known entries are
    /// updated and made reachable (releasing what they hold); unknown ones
    /// are made only if `create`.
    pub fn learn(&mut self, addr: IpAddr, mac: [u8; 6], now: Timestamp, create: bool) {
        let i = match self.find(addr) {
            Some(i) => i,
            None if create => match self.new_entry(addr) {
                Some(i) => i,
                None => return,
            },
            None => return,
        };
        let e = &mut self.entries[i];
        e.mac = mac;
        e.state = State::Reachable;
        e.timer = now.saturating_add(REACHABLE_TIME);
        e.sent = 0;
        e.solicit = false;
        if e.held() > 0 {
            self.release_due = true;
        }
        self.stats.learned += 1;
    }

    /// The next hop to solicit now, if any (the caller sends an ARP
    /// request or a Neighbor Solicitation for it).
    pub fn poll_solicit(&mut self, now: Timestamp) -> Option<IpAddr> {
        if !self.solicit_due {
            return None;
        }
        for e in &mut self.entries {
            if e.solicit {
                e.solicit = false;
                e.sent += 1;
                e.timer = now.saturating_add(RETRANS_TIMER);
                self.stats.solicitations += 1;
                return Some(e.addr);
            }
        }
        self.solicit_due = false;
        None
    }

    /// A held packet whose next hop is now known: copied into `buf`, with
    /// the MAC to send it to.
    pub fn poll_release(&mut self, buf: &mut PacketBuf) -> Option<[u8; 6]> {
        if !self.release_due {
            return None;
        }
        for e in &mut self.entries {
            if e.state != State::Incomplete && e.held() > 0 {
                let ok = buf.set(&e.held[e.first]).is_ok();
                e.first += 1;
                if e.first == e.len {
                    e.first = 0;
                    e.len = 0;
                }
                if !ok {
                    self.stats.dropped_full += 1;
                    continue;
                }
                self.stats.released += 1;
                return Some(e.mac);
            }
        }
        self.release_due = false;
        None
    }

    /// Drives the retransmissions: solicitations become due, resolutions
    /// without an answer end. Returns how many held packets were dropped.
    pub fn handle_timeout(&mut self, now: Timestamp) -> u64 {
        let mut dropped = 0;
        let mut i = 0;
        while i < self.entries.len() {
            let e = &mut self.entries[i];
            if e.state != State::Reachable && !e.solicit && e.timer <= now {
                if e.sent < MAX_SOLICIT {
                    e.solicit = true;
                    self.solicit_due = true;
                } else {
                    dropped += e.held() as u64;
                    let e = self.entries.swap_remove(i);
                    self.spare.push(e);
                    continue;
                }
            }
            i += 1;
        }
        self.stats.dropped_timeout += dropped;
        dropped
    }

    /// When [`NeighborTable::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.entries
            .iter()
            .filter(|e| e.state != State::Reachable && !e.solicit)
            .map(|e| e.timer)
            .min()
    }

    /// Whether a solicitation may be waiting to be polled.
    pub fn solicit_due(&self) -> bool {
        self.solicit_due
    }

    /// Whether a held packet may be waiting to be released.
    pub fn release_due(&self) -> bool {
        self.release_due
    }
}

/// What an ARP or NDP frame says about its sender: `(address, MAC)`.
/// ARP requests and replies (RFC 826: the sender's pair, not for a
/// probe's unspecified sender); a Neighbor Solicitation with a source
/// link-layer address option (RFC 4861 7.2.3); a Neighbor Advertisement
/// with a target link-layer address option (7.2.5). NDP messages must
/// have hop limit 255 (7.1). `None` for anything else.
pub fn glean(frame: &[u8]) -> Option<(IpAddr, [u8; 6])> {
    match ether::ethertype(frame)? {
        ETHERTYPE_ARP => {
            let arp = frame.get(ether::HEADER_LEN..ether::HEADER_LEN + 28)?;
            if arp[..6] != [0, 1, 8, 0, 6, 4] || !matches!(arp[7], 1 | 2) || arp[6] != 0 {
                return None;
            }
            let mac: [u8; 6] = arp[8..14].try_into().ok()?;
            let ip: [u8; 4] = arp[14..18].try_into().ok()?;
            (ip != [0; 4] && is_unicast_mac(mac)).then(|| (IpAddr::from(ip), mac))
        }
        ETHERTYPE_IPV6 => {
            let pkt = frame.get(ether::HEADER_LEN..)?;
            let meta = ip::parse(pkt).ok()?;
            if meta.proto != proto::ICMPV6 || meta.hop_limit != 255 || meta.frag.is_some() {
                return None;
            }
            let icmp = pkt.get(meta.header_len..meta.total_len)?;
            if icmp.len() < 24 || icmp[1] != 0 {
                return None;
            }
            let (addr, want): ([u8; 16], u8) = match icmp[0] {
                ICMPV6_NS => (pkt[8..24].try_into().ok()?, OPT_SOURCE_LL),
                ICMPV6_NA => (icmp[8..24].try_into().ok()?, OPT_TARGET_LL),
                _ => return None,
            };
            if addr == [0; 16] || addr[0] == 0xff {
                return None;
            }
            let mut opts = &icmp[24..];
            while opts.len() >= 8 {
                let len = usize::from(opts[1]) * 8;
                if len == 0 || len > opts.len() {
                    return None;
                }
                if opts[0] == want && len == 8 {
                    let mac: [u8; 6] = opts[2..8].try_into().ok()?;
                    return is_unicast_mac(mac).then(|| (IpAddr::from(addr), mac));
                }
                opts = &opts[len..];
            }
            None
        }
        _ => None,
    }
}

/// Not a group address, not all zeros.
pub fn is_unicast_mac(mac: [u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac != [0; 6]
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitsgw_wire::address_resolution::{
        arp_request, neighbor_advertisement, neighbor_solicitation, AdvertisementFlags,
        ARP_FRAME_LEN, ND_FRAME_LEN,
    };
    use bitsgw_wire::checksum;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];
    const OURS: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn learns_and_resolves() {
        let mut n = NeighborTable::default();
        assert_eq!(n.lookup(a("192.0.2.9"), t(0)), None);
        n.learn(a("192.0.2.9"), MAC, t(0), true);
        assert_eq!(n.lookup(a("192.0.2.9"), t(10)), Some(MAC));
        assert_eq!(n.poll_solicit(t(10)), None);
        // Not made from a frame that only passed by.
        n.learn(a("192.0.2.8"), MAC, t(0), false);
        assert_eq!(n.lookup(a("192.0.2.8"), t(10)), None);
    }

    #[test]
    fn holds_until_the_answer_then_releases_in_order() {
        let mut n = NeighborTable::default();
        let nh = a("203.0.113.254");
        assert_eq!(n.lookup(nh, t(0)), None);
        n.hold(nh, &[0x45, 1], t(0)).unwrap();
        n.hold(nh, &[0x45, 2], t(1)).unwrap();
        assert!(n.solicit_due());
        assert_eq!(n.poll_solicit(t(1)), Some(nh));
        assert_eq!(n.poll_solicit(t(1)), None, "one solicitation at a time");
        let mut buf = PacketBuf::new();
        assert_eq!(n.poll_release(&mut buf), None, "nothing known yet");
        n.learn(nh, MAC, t(5), false);
        assert_eq!(n.poll_release(&mut buf), Some(MAC));
        assert_eq!(buf.data(), &[0x45, 1]);
        assert_eq!(n.poll_release(&mut buf), Some(MAC));
        assert_eq!(buf.data(), &[0x45, 2]);
        assert_eq!(n.poll_release(&mut buf), None);
        assert_eq!(n.stats().released, 2);
        assert_eq!(n.lookup(nh, t(6)), Some(MAC));
        assert_eq!(n.poll_timeout(), None);
    }

    #[test]
    fn hold_is_bounded() {
        let mut n = NeighborTable::default();
        let nh = a("2001:db8:f::1");
        for i in 0..MAX_HELD {
            n.hold(nh, &[0x60, i as u8], t(0)).unwrap();
        }
        assert_eq!(n.hold(nh, &[0x60, 9], t(0)), Err(HoldError::Full));
        assert_eq!(n.stats().dropped_full, 1);
        assert_eq!(n.stats().held, MAX_HELD as u64);
    }

    #[test]
    fn retries_then_drops_what_it_held() {
        let mut n = NeighborTable::default();
        let nh = a("192.0.2.77");
        n.hold(nh, &[0x45], t(0)).unwrap();
        n.hold(nh, &[0x45], t(0)).unwrap();
        let mut sent = 0;
        let mut dropped = 0;
        for ms in (0..=5000).step_by(100) {
            if n.poll_timeout().is_some_and(|d| d <= t(ms)) {
                dropped += n.handle_timeout(t(ms));
            }
            while n.poll_solicit(t(ms)).is_some() {
                sent += 1;
                assert!(ms < 3000, "solicited at {ms} ms");
            }
            if ms < 3000 {
                assert_eq!(dropped, 0, "dropped early at {ms} ms");
            }
        }
        assert_eq!(sent, MAX_SOLICIT);
        assert_eq!(dropped, 2);
        assert_eq!(n.stats().dropped_timeout, 2);
        assert!(n.is_empty());
        // The next packet starts a new resolution.
        n.hold(nh, &[0x45], t(6000)).unwrap();
        assert_eq!(n.poll_solicit(t(6000)), Some(nh));
    }

    #[test]
    fn an_old_entry_is_used_while_probed_and_removed_without_answer() {
        let mut n = NeighborTable::default();
        let nh = a("192.0.2.9");
        n.learn(nh, MAC, t(0), true);
        let late = 30_000;
        assert_eq!(n.lookup(nh, t(late)), Some(MAC));
        assert_eq!(n.poll_solicit(t(late)), Some(nh));
        // Answered: reachable again, no more probes.
        n.learn(nh, MAC, t(late + 10), false);
        assert_eq!(n.poll_timeout(), None);
        // Expired again, unanswered: removed after the retries.
        let later = late + 10 + 30_000;
        assert_eq!(n.lookup(nh, t(later)), Some(MAC));
        let mut ms = later;
        while !n.is_empty() {
            while n.poll_solicit(t(ms)).is_some() {}
            assert_eq!(n.lookup(nh, t(ms)), Some(MAC));
            ms += 100;
            n.handle_timeout(t(ms));
            assert!(ms < later + 4000);
        }
        assert_eq!(n.lookup(nh, t(ms)), None);
    }

    #[test]
    fn full_table_recycles_resolved_entries_only() {
        let mut n = NeighborTable::new(2);
        n.learn(a("192.0.2.1"), MAC, t(0), true);
        n.hold(a("192.0.2.2"), &[0x45], t(0)).unwrap();
        // The resolved entry makes room; the resolving one is kept.
        n.hold(a("192.0.2.3"), &[0x45], t(0)).unwrap();
        assert_eq!(n.lookup(a("192.0.2.1"), t(0)), None);
        assert_eq!(
            n.hold(a("192.0.2.4"), &[0x45], t(0)),
            Err(HoldError::TableFull)
        );
    }

    #[test]
    fn gleans_arp_ns_and_na_and_builds_requests() {
        let mut arp = [0u8; ARP_FRAME_LEN];
        arp_request(MAC, [192, 0, 2, 9], [192, 0, 2, 1], &mut arp);
        assert_eq!(glean(&arp), Some((a("192.0.2.9"), MAC)));
        // A probe (sender 0.0.0.0) says nothing.
        arp_request(MAC, [0; 4], [192, 0, 2, 1], &mut arp);
        assert_eq!(glean(&arp), None);

        let src = a("2001:db8::9");
        let IpAddr::V6(s6) = src else { unreachable!() };
        let target: [u8; 16] = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let mut ns = [0u8; ND_FRAME_LEN];
        neighbor_solicitation(MAC, s6.octets(), target, &mut ns);
        assert_eq!(&ns[..6], &[0x33, 0x33, 0xff, 0, 0, 1]);
        assert_eq!(glean(&ns), Some((src, MAC)));
        let pkt = &ns[14..];
        let acc = checksum::pseudo_header(&pkt[8..24], &pkt[24..40], proto::ICMPV6, 32);
        assert_eq!(checksum::finish(checksum::sum(acc, &pkt[40..])), 0);
        assert_eq!(
            &pkt[24..40],
            &[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1]
        );

        // An NA for 2001:db8::9 giving MAC (as the proxy module builds).
        let mut na = [0u8; ND_FRAME_LEN];
        let flags = AdvertisementFlags {
            solicited: true,
            override_flag: true,
        };
        neighbor_advertisement(MAC, OURS, s6.octets(), target, s6.octets(), flags, &mut na);
        assert_eq!(glean(&na), Some((src, MAC)));
        // Hop limit other than 255: ignored (RFC 4861 7.1.2).
        let mut bad = na;
        bad[14 + 7] = 64;
        assert_eq!(glean(&bad), None);
        assert_eq!(glean(&na[..20]), None);
    }
}
