//! The home agent's binding cache (RFC 6275 9.1, 10.1; RFC 5555 4.3).

use bitsgw_wire::Timestamp;
use core::time::Duration;
use rustc_hash::FxHashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Where a mobile node is reached now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CareOf {
    /// An IPv6 care-of address (RFC 6275).
    V6([u8; 16]),
    /// An IPv4 care-of address (RFC 5555 4.1), with the path packets to it
    /// take.
    V4 {
        /// The IPv4 care-of address the mobile node registered.
        addr: [u8; 4],
        /// Where UDP-encapsulated packets go: the outer source address and
        /// port of the Binding Update (a NAT's public side when one is on
        /// the path, else the mobile node itself).
        udp: UdpPath,
        /// Whether data is UDP-encapsulated (a NAT was detected, or the
        /// home agent forces UDP) rather than carried in IPv4 directly.
        use_udp: bool,
    },
}

impl core::fmt::Display for CareOf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CareOf::V6(a) => Ipv6Addr::from(*a).fmt(f),
            CareOf::V4 { addr, udp, use_udp } => {
                Ipv4Addr::from(*addr).fmt(f)?;
                if *use_udp {
                    write!(f, " udp {}:{}", Ipv4Addr::from(udp.addr), udp.port)?;
                }
                Ok(())
            }
        }
    }
}

/// The outer IPv4 source and UDP source port a packet arrived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpPath {
    /// Outer IPv4 source address.
    pub addr: [u8; 4],
    /// Outer UDP source port.
    pub port: u16,
}

/// One binding cache entry (RFC 6275 10.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The mobile node's IPv6 home address.
    pub home: [u8; 16],
    /// Its IPv4 home address, if it has one (RFC 5555 3.1.1).
    pub home_v4: Option<[u8; 4]>,
    /// Its care-of address.
    pub care_of: CareOf,
    /// Sequence number of the last accepted Binding Update.
    pub seq: u16,
    /// The lifetime granted.
    pub lifetime: Duration,
    /// When the binding expires.
    pub expires: Timestamp,
    /// When it was last (re)registered.
    pub registered: Timestamp,
    /// Whether a NAT is on the path (RFC 5555 4.2).
    pub nat: bool,
}

/// The binding cache: home address -> binding, with the IPv4 home
/// addresses as a second key.
#[derive(Debug, Default)]
pub struct BindingCache {
    by_home: FxHashMap<[u8; 16], Binding>,
    by_home_v4: FxHashMap<[u8; 4], [u8; 16]>,
}

impl BindingCache {
    /// The binding for an IPv6 home address.
    pub fn get(&self, home: &[u8; 16]) -> Option<&Binding> {
        self.by_home.get(home)
    }

    /// The binding for an IPv4 home address.
    pub fn get_v4(&self, home_v4: &[u8; 4]) -> Option<&Binding> {
        self.by_home_v4
            .get(home_v4)
            .and_then(|h| self.by_home.get(h))
    }

    /// Inserts or replaces the binding of `b.home`.
    pub fn insert(&mut self, b: Binding) {
        if let Some(old) = self.by_home.get(&b.home) {
            if let Some(v4) = old.home_v4 {
                self.by_home_v4.remove(&v4);
            }
        }
        if let Some(v4) = b.home_v4 {
            self.by_home_v4.insert(v4, b.home);
        }
        self.by_home.insert(b.home, b);
    }

    /// Removes the binding of `home`.
    pub fn remove(&mut self, home: &[u8; 16]) -> Option<Binding> {
        let b = self.by_home.remove(home)?;
        if let Some(v4) = b.home_v4 {
            self.by_home_v4.remove(&v4);
        }
        Some(b)
    }

    /// Removes every binding that has expired at `now`, returning how many.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let gone: Vec<[u8; 16]> = self
            .by_home
            .values()
            .filter(|b| b.expires <= now)
            .map(|b| b.home)
            .collect();
        for h in &gone {
            self.remove(h);
        }
        gone.len()
    }

    /// The earliest expiry.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.by_home.values().map(|b| b.expires).min()
    }

    /// Every binding, in home address order (stable output for `show`).
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        let mut v: Vec<&Binding> = self.by_home.values().collect();
        v.sort_by_key(|b| b.home);
        v.into_iter()
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.by_home.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_home.is_empty()
    }
}
