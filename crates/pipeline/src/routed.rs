//! Routed mode on Ethernet ports: the appliance is the router of the hosts
//! on the host side and a host on the network side, so every IP packet it
//! sends goes to a next hop's MAC from the appliance's own MAC.
//!
//! The next hop of a packet is chosen by its destination with the routes
//! of the side it leaves on (longest prefix first): on the host side the
//! prefixes of the appliance's host addresses are on-link (the host
//! itself is the next hop) and routes name hosts behind other routers; on
//! the network side the default routes name the router. The MAC comes from
//! that side's [`NeighborTable`]. Each worker has its own tables (no lock
//! per packet); the workers pass each other what they learn ([`Routed`]).
//!
//! Routed mode has no VLANs (no per-VLAN addresses, routes or neighbor
//! tables): a frame with an 802.1Q or 802.1ad tag is neither routed nor
//! offered to the appliance's own stack; it is dropped and counted as
//! [`crate::PipelineDrop::Layer2`] under its outer tag's TPID.

use crate::counters::PipelineDrop;
use crate::gateway::Side;
use crate::neighbor::{self, NeighborStats, NeighborTable, DEFAULT_CAPACITY};
use bitsgw_wire::address_resolution::{self as ar, ARP_FRAME_LEN, ND_FRAME_LEN};
use bitsgw_wire::{ether, PacketBuf, Timestamp};
use crossbeam_channel::{Receiver, Sender};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A route: packets to `prefix/len` go to `via`, or are on-link (`None`:
/// the destination itself is the next hop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The destination prefix.
    pub prefix: IpAddr,
    /// Its length.
    pub len: u8,
    /// The next hop; `None` on-link.
    pub via: Option<IpAddr>,
}

/// Whether `addr` is in `prefix/len` (families must agree).
pub fn prefix_contains(prefix: IpAddr, len: u8, addr: IpAddr) -> bool {
    fn within(p: &[u8], a: &[u8], len: u8) -> bool {
        let full = usize::from(len / 8);
        let rest = len % 8;
        if full > p.len() || p[..full] != a[..full] {
            return false;
        }
        if rest == 0 {
            return true;
        }
        let mask = 0xffu8 << (8 - rest);
        p.get(full)
            .zip(a.get(full))
            .is_some_and(|(p, a)| p & mask == a & mask)
    }
    match (prefix, addr) {
        (IpAddr::V4(p), IpAddr::V4(a)) => within(&p.octets(), &a.octets(), len),
        (IpAddr::V6(p), IpAddr::V6(a)) => within(&p.octets(), &a.octets(), len),
        _ => false,
    }
}

/// One side of a routed appliance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutedSide {
    /// The appliance's MAC on this side (its endpoint answers with it).
    pub mac: [u8; 6],
    /// The appliance's addresses on this side with their prefix lengths:
    /// the sources of its solicitations.
    pub addresses: Vec<(IpAddr, u8)>,
    /// The routes of this side.
    pub routes: Vec<Route>,
}

impl RoutedSide {
    /// The next hop for `dst`: the longest matching route's.
    pub fn next_hop(&self, dst: IpAddr) -> Option<IpAddr> {
        self.routes
            .iter()
            .filter(|r| prefix_contains(r.prefix, r.len, dst))
            .max_by_key(|r| r.len)
            .map(|r| r.via.unwrap_or(dst))
    }

    /// Whether `addr` is in the prefix of one of the appliance's addresses
    /// here (a neighbor on this link).
    pub fn on_link(&self, addr: IpAddr) -> bool {
        self.addresses
            .iter()
            .any(|(a, len)| prefix_contains(*a, *len, addr))
    }

    /// Whether `addr` is one of the appliance's addresses here.
    pub fn is_own(&self, addr: &[u8]) -> bool {
        self.addresses.iter().any(|(a, _)| match a {
            IpAddr::V4(a) => a.octets() == addr,
            IpAddr::V6(a) => a.octets() == addr,
        })
    }

    /// Whether `addr` is one of the appliance's addresses here.
    pub fn is_own_addr(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.is_own(&a.octets()),
            IpAddr::V6(a) => self.is_own(&a.octets()),
        }
    }

    /// The address to solicit `target` from: one of the same family whose
    /// prefix holds it, else any of that family.
    pub fn source_for(&self, target: IpAddr) -> Option<IpAddr> {
        let same = |a: &IpAddr| a.is_ipv4() == target.is_ipv4();
        self.addresses
            .iter()
            .find(|(a, len)| prefix_contains(*a, *len, target))
            .or_else(|| self.addresses.iter().find(|(a, _)| same(a)))
            .map(|(a, _)| *a)
    }
}

/// The routed mode's settings, both sides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutedConfig {
    /// The host side.
    pub host: RoutedSide,
    /// The network side.
    pub network: RoutedSide,
}

/// Where routed mode's layer 2 puts what it sends and what it drops.
pub trait LinkOut {
    /// Sends `frame` (Ethernet) on `side`.
    fn send_frame(&mut self, side: Side, frame: &[u8]);
    /// Counts `n` packets dropped for `reason`.
    fn drop_packets(&mut self, reason: PipelineDrop, n: u64);
}

/// A neighbor one worker learned, for the others.
#[derive(Debug, Clone, Copy)]
struct Learned {
    side: Side,
    addr: IpAddr,
    mac: [u8; 6],
}

/// How many learned neighbors may wait for a worker; beyond that the
/// worker misses them and resolves those next hops itself.
const BUS_CAPACITY: usize = 256;

/// The workers' neighbor bus: every member's inbox. Locked only when a
/// member joins or leaves, never per packet; members notice a change by
/// the generation.
#[derive(Debug, Default)]
struct NeighborBus {
    inboxes: Mutex<Vec<Sender<Learned>>>,
    generation: AtomicU64,
}

/// One worker's place on the bus.
#[derive(Debug)]
struct Member {
    inbox: Receiver<Learned>,
    own: Sender<Learned>,
    peers: Vec<Sender<Learned>>,
    generation: u64,
}

/// Routed mode's layer 2 for one worker: the settings, this worker's
/// neighbor tables, and its place on the bus through which the workers
/// tell each other what they learned.
///
/// Each worker owns its tables, so nothing is locked per packet: a worker
/// learns from the ARP and NDP frames it receives and passes each pair to
/// the others; it resolves the next hops it needs itself, and a held
/// packet is released by whichever answer reaches it first (its own, or a
/// peer's through the bus, read on its next packet or loop). A clone is a
/// new worker: same settings and bus, empty tables.
#[derive(Debug)]
pub struct Routed {
    config: Arc<RoutedConfig>,
    tables: [NeighborTable; 2],
    bus: Arc<NeighborBus>,
    /// Joined on first use, so a clone kept only to make others never
    /// fills an inbox.
    member: Option<Member>,
    /// Held packets on their way out.
    release: PacketBuf,
}

impl Clone for Routed {
    fn clone(&self) -> Self {
        Routed {
            config: Arc::clone(&self.config),
            tables: Default::default(),
            bus: Arc::clone(&self.bus),
            member: None,
            release: PacketBuf::new(),
        }
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        let Some(member) = self.member.take() else {
            return;
        };
        if let Ok(mut inboxes) = self.bus.inboxes.lock() {
            inboxes.retain(|s| !s.same_channel(&member.own));
            self.bus.generation.fetch_add(1, Ordering::Release);
        }
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Host => 0,
        Side::Network => 1,
    }
}

impl Routed {
    /// Routed mode with `config` and empty neighbor tables.
    pub fn new(config: RoutedConfig) -> Self {
        Routed {
            config: Arc::new(config),
            tables: [
                NeighborTable::new(DEFAULT_CAPACITY),
                NeighborTable::new(DEFAULT_CAPACITY),
            ],
            bus: Arc::default(),
            member: None,
            release: PacketBuf::new(),
        }
    }

    /// The settings of `side`.
    pub fn side(&self, side: Side) -> &RoutedSide {
        match side {
            Side::Host => &self.config.host,
            Side::Network => &self.config.network,
        }
    }

    /// This worker's neighbor table of `side`.
    pub fn table(&self, side: Side) -> &NeighborTable {
        &self.tables[side_index(side)]
    }

    /// What this worker's neighbor table of `side` has done.
    pub fn neighbor_stats(&self, side: Side) -> NeighborStats {
        *self.table(side).stats()
    }

    /// Joins the bus if not yet a member, takes in what the other workers
    /// learned, and refreshes the list of peers after a join or leave.
    fn sync(&mut self, now: Timestamp) {
        let generation = self.bus.generation.load(Ordering::Acquire);
        let member = match self.member.as_mut() {
            Some(m) => m,
            None => {
                let (own, inbox) = crossbeam_channel::bounded(BUS_CAPACITY);
                if let Ok(mut inboxes) = self.bus.inboxes.lock() {
                    inboxes.push(own.clone());
                    self.bus.generation.fetch_add(1, Ordering::Release);
                }
                self.member.insert(Member {
                    inbox,
                    own,
                    peers: Vec::new(),
                    // Makes the refresh below happen.
                    generation: u64::MAX,
                })
            }
        };
        if member.generation != generation {
            let generation = self.bus.generation.load(Ordering::Acquire);
            if let Ok(inboxes) = self.bus.inboxes.lock() {
                member.peers.clear();
                member.peers.extend(
                    inboxes
                        .iter()
                        .filter(|s| !s.same_channel(&member.own))
                        .cloned(),
                );
                member.generation = generation;
            }
        }
        while let Ok(l) = member.inbox.try_recv() {
            self.tables[side_index(l.side)].learn(l.addr, l.mac, now, true);
        }
    }

    /// Learns from a frame received on `from`: the sender of an ARP or
    /// NDP frame (a neighbor on this link, not the appliance itself) is
    /// where it says, for this worker and the others; packets held for it
    /// leave.
    pub fn learn_from(&mut self, from: Side, frame: &[u8], now: Timestamp, out: &mut dyn LinkOut) {
        let Some((addr, mac)) = neighbor::glean(frame) else {
            return;
        };
        let own = self.side(from);
        if !own.on_link(addr) || own.is_own_addr(addr) || mac == own.mac {
            return;
        }
        self.sync(now);
        self.tables[side_index(from)].learn(addr, mac, now, true);
        if let Some(member) = &self.member {
            let learned = Learned {
                side: from,
                addr,
                mac,
            };
            for peer in &member.peers {
                // A full inbox: that worker resolves for itself.
                let _ = peer.try_send(learned);
            }
        }
        self.flush_released(from, out);
    }

    /// Sends the IP packet in `buf` on `to` to its next hop, or holds it
    /// until the next hop is resolved (asking for it). Drops are counted
    /// through `out`.
    pub fn send(&mut self, to: Side, buf: &mut PacketBuf, now: Timestamp, out: &mut dyn LinkOut) {
        self.sync(now);
        // What a peer's answer released goes before what follows it.
        self.flush_released(to, out);
        let Some(next_hop) = ip_dst(buf.data()).and_then(|d| self.side(to).next_hop(d)) else {
            out.drop_packets(PipelineDrop::NoRoute, 1);
            return;
        };
        let table = &mut self.tables[side_index(to)];
        let mac = table.lookup(next_hop, now);
        if mac.is_none() && table.hold(next_hop, buf.data(), now).is_err() {
            out.drop_packets(PipelineDrop::NeighborUnresolved, 1);
        }
        if table.solicit_due() {
            self.flush_solicitations(to, now, out);
        }
        if let Some(mac) = mac {
            send_to_mac(to, mac, self.side(to).mac, buf, out);
        }
    }

    /// Sends the solicitations due and the packets released on `side`
    /// (also those a peer's answer released).
    pub fn poll_transmit(&mut self, side: Side, now: Timestamp, out: &mut dyn LinkOut) {
        self.sync(now);
        self.flush_solicitations(side, now, out);
        self.flush_released(side, out);
    }

    /// Drives the tables' retransmissions. Returns how many held packets
    /// were dropped because their next hop never answered.
    pub fn handle_timeout(&mut self, now: Timestamp) -> u64 {
        self.tables.iter_mut().map(|t| t.handle_timeout(now)).sum()
    }

    /// When [`Routed::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.tables.iter().filter_map(|t| t.poll_timeout()).min()
    }

    /// Sends an ARP request or a Neighbor Solicitation for each next hop
    /// the table of `side` asks for, from the appliance's address and MAC
    /// there.
    fn flush_solicitations(&mut self, side: Side, now: Timestamp, out: &mut dyn LinkOut) {
        let own = match side {
            Side::Host => &self.config.host,
            Side::Network => &self.config.network,
        };
        let table = &mut self.tables[side_index(side)];
        let mut arp = [0u8; ARP_FRAME_LEN];
        let mut ns = [0u8; ND_FRAME_LEN];
        while let Some(target) = table.poll_solicit(now) {
            let frame: &[u8] = match (target, own.source_for(target)) {
                (IpAddr::V4(t), Some(IpAddr::V4(s))) => {
                    ar::arp_request(own.mac, s.octets(), t.octets(), &mut arp);
                    &arp
                }
                (IpAddr::V6(t), Some(IpAddr::V6(s))) => {
                    ar::neighbor_solicitation(own.mac, s.octets(), t.octets(), &mut ns);
                    &ns
                }
                // No address of that family to ask from (the configuration
                // prevents it): what is held times out, counted.
                _ => continue,
            };
            out.send_frame(side, frame);
        }
    }

    /// Sends the packets the table of `side` held and can now release.
    fn flush_released(&mut self, side: Side, out: &mut dyn LinkOut) {
        if !self.tables[side_index(side)].release_due() {
            return;
        }
        let src = self.side(side).mac;
        let table = &mut self.tables[side_index(side)];
        while let Some(mac) = table.poll_release(&mut self.release) {
            send_to_mac(side, mac, src, &mut self.release, out);
        }
    }
}

/// Puts an Ethernet header from `src` to `dst` in front of the IP packet
/// in `buf` and sends it on `to`.
fn send_to_mac(to: Side, dst: [u8; 6], src: [u8; 6], buf: &mut PacketBuf, out: &mut dyn LinkOut) {
    let ethertype = ether::ethertype_for(buf.data()).unwrap_or(ether::ETHERTYPE_IPV4);
    match buf.prepend(ether::HEADER_LEN) {
        Ok(h) => {
            h[..6].copy_from_slice(&dst);
            h[6..12].copy_from_slice(&src);
            h[12..14].copy_from_slice(&ethertype.to_be_bytes());
            out.send_frame(to, buf.data());
        }
        Err(_) => out.drop_packets(PipelineDrop::SendFailed, 1),
    }
}

/// The destination address of an IP packet (by its version nibble).
pub(crate) fn ip_dst(pkt: &[u8]) -> Option<IpAddr> {
    match pkt.first()? >> 4 {
        4 => <[u8; 4]>::try_from(pkt.get(16..20)?).ok().map(IpAddr::from),
        6 => <[u8; 16]>::try_from(pkt.get(24..40)?)
            .ok()
            .map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_and_on_link() {
        let side = RoutedSide {
            mac: [2, 0, 0, 0, 0, 1],
            addresses: vec![(a("192.0.2.1"), 24), (a("2001:db8:a::1"), 64)],
            routes: vec![
                Route {
                    prefix: a("192.0.2.0"),
                    len: 24,
                    via: None,
                },
                Route {
                    prefix: a("192.0.2.128"),
                    len: 25,
                    via: Some(a("192.0.2.2")),
                },
                Route {
                    prefix: a("0.0.0.0"),
                    len: 0,
                    via: Some(a("192.0.2.254")),
                },
            ],
        };
        assert_eq!(side.next_hop(a("192.0.2.10")), Some(a("192.0.2.10")));
        assert_eq!(side.next_hop(a("192.0.2.200")), Some(a("192.0.2.2")));
        assert_eq!(side.next_hop(a("198.51.100.1")), Some(a("192.0.2.254")));
        assert_eq!(side.next_hop(a("2001:db8:b::1")), None);
        assert!(side.on_link(a("192.0.2.77")));
        assert!(!side.on_link(a("192.0.3.77")));
        assert!(side.on_link(a("2001:db8:a::77")));
        assert_eq!(
            side.source_for(a("2001:db8:a::9")),
            Some(a("2001:db8:a::1"))
        );
        assert_eq!(side.source_for(a("10.0.0.1")), Some(a("192.0.2.1")));
        assert!(side.is_own(&[192, 0, 2, 1]));
        assert!(prefix_contains(a("10.0.0.0"), 0, a("1.2.3.4")));
        assert!(!prefix_contains(a("10.0.0.0"), 0, a("::1")));
        assert!(prefix_contains(a("2001:db8::"), 33, a("2001:db8:7fff::1")));
        assert!(!prefix_contains(a("2001:db8::"), 33, a("2001:db8:8000::1")));
    }

    /// What a worker's layer 2 sent and dropped.
    #[derive(Default)]
    struct Out {
        sent: Vec<(Side, Vec<u8>)>,
        dropped: Vec<(PipelineDrop, u64)>,
    }

    impl LinkOut for Out {
        fn send_frame(&mut self, side: Side, frame: &[u8]) {
            self.sent.push((side, frame.to_vec()));
        }

        fn drop_packets(&mut self, reason: PipelineDrop, n: u64) {
            self.dropped.push((reason, n));
        }
    }

    const OWN_MAC: [u8; 6] = [2, 0, 0, 0, 0xa, 2];
    const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn workers_learn_from_each_other_and_leave_the_bus() {
        let template = Routed::new(RoutedConfig {
            host: RoutedSide::default(),
            network: RoutedSide {
                mac: OWN_MAC,
                addresses: vec![(a("203.0.113.1"), 24)],
                routes: vec![Route {
                    prefix: a("0.0.0.0"),
                    len: 0,
                    via: Some(a("203.0.113.254")),
                }],
            },
        });
        let now = Timestamp::ZERO;
        let (mut first, mut second) = (template.clone(), template.clone());
        let mut out = Out::default();
        first.poll_transmit(Side::Network, now, &mut out);
        second.poll_transmit(Side::Network, now, &mut out);
        assert!(out.sent.is_empty());
        let members = |r: &Routed| r.bus.inboxes.lock().map(|i| i.len()).unwrap_or(0);
        assert_eq!(members(&template), 2, "the template never joins");

        let pkt = bitsgw_wire::craft::udp_packet(a("192.0.2.10"), a("198.51.100.1"), 1, 2, 8);
        let mut buf = PacketBuf::from_slice(&pkt);
        first.send(Side::Network, &mut buf, now, &mut out);
        let mut request = [0u8; ARP_FRAME_LEN];
        ar::arp_request(OWN_MAC, [203, 0, 113, 1], [203, 0, 113, 254], &mut request);
        assert_eq!(out.sent, vec![(Side::Network, request.to_vec())]);
        out.sent.clear();

        let mut reply = [0u8; ARP_FRAME_LEN];
        ar::arp_reply(&request, ROUTER_MAC, &mut reply).unwrap();
        second.learn_from(Side::Network, &reply, now, &mut out);
        assert!(out.sent.is_empty(), "the second worker held nothing");
        assert_eq!(second.neighbor_stats(Side::Network).learned, 1);

        first.poll_transmit(Side::Network, now, &mut out);
        assert_eq!(out.sent.len(), 1, "released on the first worker's loop");
        let (side, frame) = &out.sent[0];
        assert_eq!(*side, Side::Network);
        assert_eq!(&frame[..12], &[ROUTER_MAC, OWN_MAC].concat()[..]);
        assert_eq!(&frame[14..], &pkt[..]);
        assert!(out.dropped.is_empty());

        drop(second);
        assert_eq!(members(&template), 1);
        // The first worker's peers follow: nothing is sent to the one gone.
        first.learn_from(Side::Network, &reply, now, &mut out);
        assert!(first.member.as_ref().is_some_and(|m| m.peers.is_empty()));
    }
}
