//! Routed mode on Ethernet ports: the appliance is the router of the hosts
//! on the host side and a host on the network side, so every IP packet it
//! sends goes to a next hop's MAC from the appliance's own MAC.
//!
//! The next hop of a packet is chosen by its destination with the routes
//! of the side it leaves on (longest prefix first): on the host side the
//! prefixes of the appliance's host addresses are on-link (the host
//! itself is the next hop) and routes name hosts behind other routers; on
//! the network side the default routes name the router. The MAC comes from
//! that side's [`NeighborTable`], shared by all workers.
//!
//! Routed mode has no VLANs (no per-VLAN addresses, routes or neighbor
//! tables): a frame with an 802.1Q or 802.1ad tag is neither routed nor
//! offered to the appliance's own stack; it is dropped and counted as
//! [`crate::PipelineDrop::Layer2`] under its outer tag's TPID.

use crate::gateway::Side;
use crate::neighbor::{NeighborStats, NeighborTable, DEFAULT_CAPACITY};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

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

/// Routed mode: the settings and the neighbor tables, shared by the
/// workers' gateways (clones share them).
#[derive(Debug, Clone)]
pub struct Routed {
    config: Arc<RoutedConfig>,
    tables: Arc<[Mutex<NeighborTable>; 2]>,
}

impl Routed {
    /// Routed mode with `config` and empty neighbor tables.
    pub fn new(config: RoutedConfig) -> Self {
        Routed {
            config: Arc::new(config),
            tables: Arc::new([
                Mutex::new(NeighborTable::new(DEFAULT_CAPACITY)),
                Mutex::new(NeighborTable::new(DEFAULT_CAPACITY)),
            ]),
        }
    }

    /// The settings of `side`.
    pub fn side(&self, side: Side) -> &RoutedSide {
        match side {
            Side::Host => &self.config.host,
            Side::Network => &self.config.network,
        }
    }

    /// The neighbor table of `side`. `None` only if a worker panicked
    /// while holding it.
    pub fn table(&self, side: Side) -> Option<MutexGuard<'_, NeighborTable>> {
        let i = match side {
            Side::Host => 0,
            Side::Network => 1,
        };
        self.tables[i].lock().ok()
    }

    /// What the neighbor table of `side` has done.
    pub fn neighbor_stats(&self, side: Side) -> NeighborStats {
        self.table(side).map(|t| *t.stats()).unwrap_or_default()
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
}
