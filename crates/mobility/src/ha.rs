//! The home agent: its protocol module (binding cache, Binding Update
//! processing, RFC 6275 10.3 and 9.5, RFC 5555 4.3) and its tunnel stage,
//! in the shape of the IPsec stage: `handle_*` takes a packet and `now`,
//! `poll_*` gives what to send.

use crate::binding::{Binding, BindingCache, CareOf};
use crate::counters::{MobilityCounters, MobilityDrop, MobilityEvent};
use crate::keying::KeyManagement;
use crate::packet::{self, Upper};
use crate::seq;
use crate::tunnel::{HaAddresses, HaInbound, HaTunnel};
use bitsgw_ipsec_query::IpsecQuery;
use bitsgw_wire::mh::{
    ba_status, be_status, ipv4_ack_status, mh_type, BindingAck, BindingUpdate, Message, MhOption,
};
use bitsgw_wire::mip6::{
    MobilePrefixAdvertisement, MobilePrefixSolicitation, PrefixInfo, ICMPV6_MPS,
};
use bitsgw_wire::{PacketBuf, Timestamp};
use core::time::Duration;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::net::IpAddr;

/// RFC 5555 3.2.2 / 7: the default NAT keepalive refresh time (NATKATIMEOUT).
pub const DEFAULT_NAT_REFRESH: Duration = Duration::from_secs(110);

/// A mobile node the home agent serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedNode {
    /// Its IPv6 home address.
    pub home: [u8; 16],
    /// Its static IPv4 home address, if it has one.
    pub home_v4: Option<[u8; 4]>,
}

/// Home agent settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// The home agent's IPv6 address.
    pub address: [u8; 16],
    /// Its IPv4 address (needed for IPv4 care-of addresses).
    pub address_v4: Option<[u8; 4]>,
    /// Home subnet prefixes (address, length).
    pub home_prefixes: Vec<([u8; 16], u8)>,
    /// The mobile nodes served.
    pub nodes: Vec<ServedNode>,
    /// IPv4 home addresses assigned on request (0.0.0.0 in the IPv4 Home
    /// Address option, RFC 5555 3.1.1).
    pub ipv4_pool: Vec<[u8; 4]>,
    /// Prefix length of the IPv4 home addresses.
    pub ipv4_prefix_len: u8,
    /// Longest lifetime granted.
    pub max_lifetime: Duration,
    /// NAT keepalive refresh time given in the NAT Detection option.
    pub nat_refresh: Duration,
    /// Force UDP encapsulation even without a NAT (the F flag).
    pub force_udp: bool,
    /// Whether the home agent's key management survives movement (its
    /// IKE SA with a mobile node can move to a new care-of address): K in
    /// the BA of a Binding Update with K (RFC 6275 6.1.8, 10.3.1; see
    /// [`crate::keying`]).
    pub key_management_mobility: bool,
}

impl HaConfig {
    /// Whether `a` is in one of the home prefixes.
    pub fn in_home_prefix(&self, a: &[u8; 16]) -> bool {
        let x = u128::from_be_bytes(*a);
        self.home_prefixes.iter().any(|(p, len)| {
            let len = u32::from(*len).min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            x & mask == u128::from_be_bytes(*p) & mask
        })
    }
}

/// What to do with a packet the IPsec stage delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Not for the protocol module: pass it on to the host side.
    ToHost,
    /// Taken by the protocol module (an answer may wait in
    /// `poll_transmit`).
    Consumed,
    /// Dropped for this reason.
    Drop(MobilityDrop),
}

/// A reply route for a packet to a home address without a binding (the
/// BA of a rejected or de-registering BU goes to the care-of address it
/// came from, RFC 6275 10.3.1/10.3.2), kept for a short while.
#[derive(Debug, Clone, Copy)]
struct ReplyRoute {
    care_of: CareOf,
    until: Timestamp,
}

/// How long a reply route is kept.
const REPLY_ROUTE_TIME: Duration = Duration::from_secs(2);

/// The home agent.
#[derive(Debug)]
pub struct HomeAgent {
    cfg: HaConfig,
    cache: BindingCache,
    tunnel: HaTunnel,
    replies: FxHashMap<[u8; 16], ReplyRoute>,
    pool_used: FxHashMap<[u8; 4], [u8; 16]>,
    out: VecDeque<Vec<u8>>,
    newly_away: VecDeque<([u8; 16], Option<[u8; 4]>)>,
    /// Nodes registered when the home prefixes changed: their next BA says
    /// so (status 1, RFC 6275 10.6.2).
    prefixes_changed: rustc_hash::FxHashSet<[u8; 16]>,
    counters: MobilityCounters,
    /// The packet `poll_transmit` handed out last is a BA: the next packet
    /// through the outbound tunnel stage is it, sealed by IPsec.
    sending_ba: bool,
    /// What the key management is to do after registrations.
    key_management: VecDeque<KeyManagement>,
}

impl HomeAgent {
    /// A home agent with an empty binding cache.
    pub fn new(cfg: HaConfig) -> Self {
        HomeAgent {
            cfg,
            cache: BindingCache::default(),
            tunnel: HaTunnel::default(),
            replies: FxHashMap::default(),
            pool_used: FxHashMap::default(),
            out: VecDeque::new(),
            newly_away: VecDeque::new(),
            prefixes_changed: rustc_hash::FxHashSet::default(),
            counters: MobilityCounters::default(),
            sending_ba: false,
            key_management: VecDeque::new(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &HaConfig {
        &self.cfg
    }

    /// New home prefixes (RFC 6275 10.6.2): every node registered now
    /// gets status 1, "accepted but prefix discovery necessary", in its next
    /// BA, and asks for them with a Mobile Prefix Solicitation.
    pub fn set_home_prefixes(&mut self, prefixes: Vec<([u8; 16], u8)>) {
        self.cfg.home_prefixes = prefixes;
        self.prefixes_changed
            .extend(self.cache.iter().map(|b| b.home));
    }

    /// What the key management is to do after a registration (see
    /// [`crate::keying`]).
    pub fn poll_key_management(&mut self) -> Option<KeyManagement> {
        self.key_management.pop_front()
    }

    /// The binding cache.
    pub fn bindings(&self) -> &BindingCache {
        &self.cache
    }

    /// Its counters.
    pub fn counters(&self) -> &MobilityCounters {
        &self.counters
    }

    fn addresses(&self) -> HaAddresses {
        HaAddresses {
            v6: self.cfg.address,
            v4: self.cfg.address_v4,
        }
    }

    /// Tunnel stage, inbound (network -> IPsec). `Err` means drop, counted.
    pub fn handle_network(
        &mut self,
        q: &impl IpsecQuery,
        buf: &mut PacketBuf,
        now: Timestamp,
    ) -> Result<(), MobilityDrop> {
        let ha = self.addresses();
        let before = buf.len();
        match self.tunnel.handle_inbound(q, &self.cache, &ha, buf, now) {
            HaInbound::Pass => {
                if buf.len() != before {
                    self.counters.event(MobilityEvent::Decapsulated);
                }
                Ok(())
            }
            HaInbound::Drop {
                reason,
                binding_error,
            } => {
                self.counters.drop(reason);
                if let Some((home, src)) = binding_error {
                    self.send_binding_error(src, be_status::UNKNOWN_HAO_BINDING, home);
                }
                Err(reason)
            }
        }
    }

    /// RFC 3776 4.2: for a node at home (no binding) the SPD entries of the
    /// tunnel between the home agent and its home address are inactive: a
    /// packet from the home link to one of its home addresses that they
    /// would take goes around IPsec, as it would without mobility. (The
    /// node at home sends on the home link, not through the network port,
    /// so nothing received is passed around IPsec.)
    pub fn untunnelled_at_home(&mut self, q: &impl IpsecQuery, received: bool, pkt: &[u8]) -> bool {
        // Every node away (the usual case) costs one comparison.
        if received || self.cache.len() >= self.cfg.nodes.len() {
            return false;
        }
        let dst = match pkt.first().map(|b| b >> 4) {
            Some(6) => pkt.get(24..40),
            Some(4) => pkt.get(16..20),
            _ => None,
        };
        let Some(dst) = dst else {
            return false;
        };
        let node = self
            .cfg
            .nodes
            .iter()
            .find(|n| dst == n.home || n.home_v4.is_some_and(|a| dst == a));
        let untunnelled = node.is_some_and(|n| {
            self.cache.get(&n.home).is_none()
                && crate::tunnel::in_home_tunnel(q, pkt, false, self.cfg.address, n.home)
        });
        if untunnelled {
            self.counters.event(MobilityEvent::AtHomeUntunnelled);
        }
        untunnelled
    }

    /// Tunnel stage, outbound (IPsec -> network): Req #1.
    pub fn handle_protected(
        &mut self,
        q: &impl IpsecQuery,
        buf: &mut PacketBuf,
        now: Timestamp,
    ) -> Result<(), MobilityDrop> {
        let ha = self.addresses();
        let dst: Option<[u8; 16]> = buf.data().get(24..40).and_then(|d| d.try_into().ok());
        let extra = dst
            .and_then(|d| self.replies.get(&d))
            .filter(|r| r.until > now)
            .map(|r| r.care_of);
        let own_ba = core::mem::take(&mut self.sending_ba);
        match self
            .tunnel
            .handle_outbound(q, &self.cache, extra.as_ref(), &ha, own_ba, buf)
        {
            Ok(true) => {
                self.counters
                    .event(crate::tunnel::what_was_done(buf.data()));
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(reason) => {
                self.counters.drop(reason);
                Err(reason)
            }
        }
    }

    /// Protocol module: a packet the IPsec stage delivered.
    pub fn handle_delivered(&mut self, buf: &PacketBuf, now: Timestamp) -> Delivered {
        let pkt = buf.data();
        let me = self.cfg.address;
        let up = packet::upper(pkt, |_, dst| *dst == me);
        let to_us = |dst: &[u8; 16]| *dst == me;
        match up {
            Upper::Mh {
                src,
                dst,
                hao,
                repr,
            } if to_us(&dst) => match repr.message {
                Message::BindingUpdate(bu) => {
                    let opts: Vec<MhOption<'_>> = repr.options().collect();
                    self.handle_bu(src, hao, bu, &opts, now);
                    Delivered::Consumed
                }
                Message::Unknown { .. } => {
                    // RFC 6275 9.2: an unknown type gets a Binding Error,
                    // status 2. RFC 6275 9.3.3: it goes to the source the
                    // packet arrived with (the care-of address, which the
                    // tunnel stage swapped into the Home Address option),
                    // and its Home Address field is the option's home
                    // address (6.1.9); without the option, to the source
                    // with the field unspecified.
                    let (to, home) = match hao {
                        Some(care_of) => (care_of, src),
                        None => (src, [0; 16]),
                    };
                    self.send_binding_error(to, be_status::UNKNOWN_MH_TYPE, home);
                    Delivered::Consumed
                }
                _ => self.dropped(MobilityDrop::UnexpectedMh),
            },
            Upper::BadMh => self.dropped(MobilityDrop::MhMalformed),
            Upper::BadMhChecksum => self.dropped(MobilityDrop::MhBadChecksum),
            Upper::Icmpv6 { src, dst, icmp }
                if to_us(&dst) && icmp.first() == Some(&ICMPV6_MPS) =>
            {
                match MobilePrefixSolicitation::parse(icmp) {
                    Ok(mps) => {
                        self.counters.event(MobilityEvent::PrefixSolicitation);
                        self.send_prefix_advertisement(src, mps.identifier);
                        Delivered::Consumed
                    }
                    Err(_) => self.dropped(MobilityDrop::Malformed),
                }
            }
            _ => Delivered::ToHost,
        }
    }

    fn dropped(&mut self, reason: MobilityDrop) -> Delivered {
        self.counters.drop(reason);
        Delivered::Drop(reason)
    }

    /// RFC 6275 10.3.1 (with 9.5.1 for the sequence number) and RFC 5555
    /// 4.3.1: checks a home registration, updates the binding cache and
    /// answers with a BA when asked to or on error.
    fn handle_bu(
        &mut self,
        home: [u8; 16],
        hao: Option<[u8; 16]>,
        bu: BindingUpdate,
        opts: &[MhOption<'_>],
        now: Timestamp,
    ) {
        self.counters.event(MobilityEvent::BuReceived);
        let mut alt_coa = None;
        let mut v4_coa = None;
        let mut v4_home_req = None;
        for o in opts {
            match *o {
                MhOption::AlternateCareOf(a) => alt_coa = Some(a),
                MhOption::Ipv4CareOf(a) => v4_coa = Some(a),
                MhOption::Ipv4HomeAddress {
                    addr,
                    prefix_len,
                    request_prefix,
                } => v4_home_req = Some((addr, prefix_len, request_prefix)),
                _ => {}
            }
        }
        let existing = self.cache.get(&home).cloned();
        let observation = self.tunnel.take_observation(&home);
        // Where the answer goes: the care-of address the BU came from.
        let (reply_to, without_v4_care_of) = match (v4_coa, observation) {
            (Some(addr), Some(o)) => (
                Some(CareOf::V4 {
                    addr,
                    udp: o.udp,
                    use_udp: true,
                }),
                false,
            ),
            (Some(_), None) => {
                // RFC 5555 4.1: a BU with an IPv4 care-of address comes in
                // UDP; without the outer header there is nothing to detect
                // a NAT with and nowhere to answer.
                self.counters.drop(MobilityDrop::NoNatObservation);
                return;
            }
            (None, Some(o)) => (
                Some(CareOf::V4 {
                    addr: o.udp.addr,
                    udp: o.udp,
                    use_udp: true,
                }),
                true,
            ),
            (None, None) => (
                hao.or(alt_coa).filter(|c| *c != home).map(CareOf::V6),
                false,
            ),
        };
        let reject = |this: &mut Self, status: u8, seq_no: u16| {
            this.counters.event(MobilityEvent::BuRejected);
            this.note_reply_route(home, reply_to, now);
            this.send_ba(home, status, false, seq_no, 0, &[]);
        };
        if without_v4_care_of {
            // RFC 5555 4.1 and 4.3.1: a Binding Update sent over IPv4
            // carries its care-of address in the IPv4 Care-of Address
            // option; without it there is no valid care-of address, and the
            // home agent refuses it with RFC 6275 6.1.8's 174 (Invalid
            // Care-of Address), answering where it came from. It is no
            // de-registration: that comes from the home link.
            return reject(self, ba_status::INVALID_CARE_OF_ADDRESS, bu.seq);
        }
        if !bu.home_registration {
            // Not a home registration: this node is no correspondent node
            // for route optimisation.
            return reject(self, ba_status::ADMIN_PROHIBITED, bu.seq);
        }
        if !self.cfg.in_home_prefix(&home) {
            return reject(self, ba_status::NOT_HOME_SUBNET, bu.seq);
        }
        let Some(node) = self.cfg.nodes.iter().find(|n| n.home == home).cloned() else {
            return reject(self, ba_status::NOT_HOME_AGENT, bu.seq);
        };
        if let Some(b) = &existing {
            if !seq::is_newer(bu.seq, b.seq) {
                // RFC 6275 9.5.1: the BA carries the last accepted number.
                return reject(self, ba_status::SEQ_OUT_OF_WINDOW, b.seq);
            }
        }
        // The care-of address: IPv4 CoA option (RFC 5555), else the
        // Alternate Care-of Address option (RFC 3776 3.1 requires it), else
        // the Home Address option's address, else the source (at home).
        let care_of = match (v4_coa, observation) {
            (Some(addr), Some(o)) => {
                let nat = o.udp.addr != addr;
                CareOf::V4 {
                    addr,
                    udp: o.udp,
                    use_udp: nat || self.cfg.force_udp,
                }
            }
            _ => CareOf::V6(alt_coa.or(hao).unwrap_or(home)),
        };
        if v4_coa.is_some() && self.cfg.address_v4.is_none() {
            return reject(self, ba_status::UNSPECIFIED, bu.seq);
        }
        let lifetime_req = Duration::from_secs(u64::from(bu.lifetime_units) * 4);
        let deregister = lifetime_req.is_zero() || care_of == CareOf::V6(home);
        if deregister {
            // RFC 6275 10.3.2: with no home registration in the Binding
            // Cache for this node, the de-registration is rejected with
            // 133 (not home agent for this mobile node).
            if existing.is_none() {
                return reject(self, ba_status::NOT_HOME_AGENT, bu.seq);
            }
            if let Some(b) = self.cache.remove(&home) {
                self.release_v4(&b);
                self.counters.event(MobilityEvent::BindingDeleted);
            }
            self.note_reply_route(home, reply_to, now);
            self.counters.event(MobilityEvent::BuAccepted);
            // K cleared: nothing moves to the home address (see
            // `crate::keying`).
            self.send_ba(home, ba_status::ACCEPTED, false, bu.seq, 0, &[]);
            return;
        }
        let granted = lifetime_req.min(self.cfg.max_lifetime);
        let units = u16::try_from(granted.as_secs() / 4).unwrap_or(u16::MAX);
        // RFC 5555 3.1.1/4.3.1: the IPv4 home address asked for.
        let mut ack = None;
        let mut home_v4 = existing.as_ref().and_then(|b| b.home_v4);
        if let Some((want, _plen, _prefix)) = v4_home_req {
            let (status, addr) = self.assign_v4(&node, want, home_v4);
            if status == ipv4_ack_status::SUCCESS {
                home_v4 = Some(addr);
            }
            ack = Some(MhOption::Ipv4AddressAck {
                status,
                prefix_len: self.cfg.ipv4_prefix_len,
                addr,
            });
        }
        let nat = matches!(care_of, CareOf::V4 { addr, udp, .. } if udp.addr != addr);
        if nat {
            self.counters.event(MobilityEvent::NatDetected);
        }
        let binding = Binding {
            home,
            home_v4,
            care_of,
            seq: bu.seq,
            lifetime: Duration::from_secs(u64::from(units) * 4),
            expires: now.saturating_add(Duration::from_secs(u64::from(units) * 4)),
            registered: now,
            nat,
        };
        // RFC 6275 10.3.1: K echoed when our key management moves too; the
        // IKE SA follows a care-of address that changed (or is the first),
        // or without K is established again from there.
        let key_management = bu.key_mgmt_compat && self.cfg.key_management_mobility;
        // The BA then carries the NAT Detection option (RFC 5555 4.1): the
        // IKE SA is expected anew rather than moved (see
        // `crate::keying`), as the mobile node decides from the same BA.
        let over_udp = matches!(care_of, CareOf::V4 { .. }) && (nat || self.cfg.force_udp);
        let moved = existing.as_ref().is_none_or(|b| b.care_of != care_of);
        if moved {
            let (home_agent, care_of) = match care_of {
                CareOf::V6(a) => (IpAddr::from(self.cfg.address), IpAddr::from(a)),
                // Checked above: an IPv4 care-of address needs our IPv4
                // address.
                CareOf::V4 { udp, .. } => (
                    IpAddr::from(self.cfg.address_v4.unwrap_or_default()),
                    IpAddr::from(udp.addr),
                ),
            };
            let k = if key_management && !over_udp {
                KeyManagement::Move {
                    home,
                    home_agent,
                    care_of,
                }
            } else {
                KeyManagement::Expect {
                    home,
                    home_agent,
                    care_of,
                }
            };
            crate::keying::queue(&mut self.key_management, k);
        }
        if existing.is_some() {
            self.counters.event(MobilityEvent::BindingUpdated);
        } else {
            self.counters.event(MobilityEvent::BindingCreated);
            self.newly_away.push_back((home, home_v4));
        }
        self.cache.insert(binding);
        self.counters.event(MobilityEvent::BuAccepted);
        let mut opts: Vec<MhOption<'_>> = Vec::new();
        opts.extend(ack);
        if over_udp {
            // RFC 5555 3.2.2, 4.2.
            opts.push(MhOption::NatDetection {
                udp_forced: self.cfg.force_udp,
                refresh_time: u32::try_from(self.cfg.nat_refresh.as_secs()).unwrap_or(u32::MAX),
            });
        }
        let status = if self.prefixes_changed.remove(&home) {
            ba_status::ACCEPTED_PREFIX_DISCOVERY
        } else {
            ba_status::ACCEPTED
        };
        // Status 1 asks for an answer whatever A says (the node must learn it).
        if bu.ack || status != ba_status::ACCEPTED {
            self.send_ba(home, status, key_management, bu.seq, units, &opts);
        }
    }

    /// Keeps, for a moment, where the answer to a BU of `home` that leaves
    /// no binding behind goes (RFC 6275 10.3.1, 10.3.2).
    fn note_reply_route(&mut self, home: [u8; 16], care_of: Option<CareOf>, now: Timestamp) {
        if let Some(care_of) = care_of {
            self.replies.insert(
                home,
                ReplyRoute {
                    care_of,
                    until: now.saturating_add(REPLY_ROUTE_TIME),
                },
            );
        }
    }

    /// RFC 5555 4.3.1: the IPv4 home address for `node`.
    fn assign_v4(
        &mut self,
        node: &ServedNode,
        want: [u8; 4],
        current: Option<[u8; 4]>,
    ) -> (u8, [u8; 4]) {
        if want == [0; 4] {
            if let Some(a) = node.home_v4.or(current) {
                return (ipv4_ack_status::SUCCESS, a);
            }
            let free = self
                .cfg
                .ipv4_pool
                .iter()
                .find(|a| !self.pool_used.contains_key(*a))
                .copied();
            return match free {
                Some(a) => {
                    self.pool_used.insert(a, node.home);
                    (ipv4_ack_status::SUCCESS, a)
                }
                None => (ipv4_ack_status::DYNAMIC_IPV4_HOA_NOT_AVAILABLE, [0; 4]),
            };
        }
        if node.home_v4 == Some(want) || current == Some(want) {
            return (ipv4_ack_status::SUCCESS, want);
        }
        if self.cfg.ipv4_pool.contains(&want) {
            match self.pool_used.get(&want) {
                Some(owner) if *owner != node.home => {
                    return (ipv4_ack_status::INCORRECT_IPV4_HOA, want)
                }
                _ => {
                    self.pool_used.insert(want, node.home);
                    return (ipv4_ack_status::SUCCESS, want);
                }
            }
        }
        (ipv4_ack_status::INCORRECT_IPV4_HOA, want)
    }

    fn release_v4(&mut self, b: &Binding) {
        if let Some(a) = b.home_v4 {
            if self.pool_used.get(&a) == Some(&b.home) {
                self.pool_used.remove(&a);
            }
        }
    }

    fn send_ba(
        &mut self,
        home: [u8; 16],
        status: u8,
        key_management: bool,
        seq_no: u16,
        units: u16,
        opts: &[MhOption<'_>],
    ) {
        let ba = Message::BindingAck(BindingAck {
            status,
            key_mgmt_compat: key_management,
            seq: seq_no,
            lifetime_units: units,
        });
        self.out
            .push_back(packet::mh_packet(self.cfg.address, home, &ba, opts));
        self.counters.event(MobilityEvent::BaSent);
    }

    /// RFC 6275 6.1.9, 9.3.1: a Binding Error to `to`. When `to` is a
    /// care-of address no SA reaches it: it leaves in clear (RFC 3776 4
    /// protects Binding Updates and Acknowledgements, prefix discovery,
    /// return routability and payload, not Binding Errors), through the
    /// shipped policies' `be-bypass-out` entry; the mobile node trusts it
    /// only as far as RFC 6275 11.3.6 lets it.
    fn send_binding_error(&mut self, to: [u8; 16], status: u8, home: [u8; 16]) {
        let be = Message::BindingError {
            status,
            home_address: home,
        };
        self.out
            .push_back(packet::mh_packet(self.cfg.address, to, &be, &[]));
        self.counters.event(MobilityEvent::BeSent);
    }

    /// RFC 6275 10.6.3, 6.8: the home prefixes, to a mobile node that
    /// asked.
    fn send_prefix_advertisement(&mut self, to: [u8; 16], identifier: u16) {
        let prefixes: Vec<PrefixInfo> = self
            .cfg
            .home_prefixes
            .iter()
            .map(|(p, len)| PrefixInfo {
                prefix_len: *len,
                on_link: true,
                autonomous: true,
                router_address: false,
                valid_lifetime: u32::try_from(self.cfg.max_lifetime.as_secs()).unwrap_or(u32::MAX),
                preferred_lifetime: u32::try_from(self.cfg.max_lifetime.as_secs())
                    .unwrap_or(u32::MAX),
                prefix: *p,
            })
            .collect();
        let mut icmp = vec![0u8; MobilePrefixAdvertisement::buffer_len(&prefixes)];
        let mpa = MobilePrefixAdvertisement {
            identifier,
            managed: false,
            other: false,
            options: &[],
        };
        if let Ok(n) = mpa.emit(&prefixes, &mut icmp, &self.cfg.address, &to) {
            icmp.truncate(n);
            self.out
                .push_back(packet::icmpv6_packet(self.cfg.address, to, &icmp));
            self.counters.event(MobilityEvent::PrefixAdvertisement);
        }
    }

    /// The next packet the protocol module originated (BA, BE, MPA), for
    /// the IPsec stage's outbound side.
    pub fn poll_transmit(&mut self, buf: &mut PacketBuf) -> bool {
        match self.out.pop_front() {
            Some(p) => {
                self.sending_ba = packet::mh_type_of(&p) == Some(mh_type::BA);
                buf.set(&p).is_ok()
            }
            None => false,
        }
    }

    /// When `handle_timeout` next has work.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let replies = self.replies.values().map(|r| r.until).min();
        match (self.cache.next_expiry(), replies) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expires bindings (RFC 6275 10.3.1: a binding lives for its lifetime)
    /// and reply routes.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let expired: Vec<Binding> = self
            .cache
            .iter()
            .filter(|b| b.expires <= now)
            .cloned()
            .collect();
        for b in expired {
            self.cache.remove(&b.home);
            self.release_v4(&b);
            self.counters.event(MobilityEvent::BindingExpired);
        }
        self.replies.retain(|_, r| r.until > now);
    }

    /// A node that has just gone away (its first binding): the home agent
    /// starts to defend its home addresses on the home link with an
    /// unsolicited Neighbor Advertisement (RFC 6275 10.4.1) or ARP.
    pub fn poll_newly_away(&mut self) -> Option<([u8; 16], Option<[u8; 4]>)> {
        let n = self.newly_away.pop_front()?;
        self.counters.event(MobilityEvent::ProxyAnnounced);
        Some(n)
    }

    /// Counts a solicitation answered for an away node.
    pub fn proxy_answered(&mut self) {
        self.counters.event(MobilityEvent::ProxyAnswered);
    }

    /// Whether traffic for this IPv6 or IPv4 home address must be taken
    /// from the home link now (proxy Neighbor Discovery / ARP, RFC 6275
    /// 10.4.1): the node is away.
    pub fn is_away(&self, home: &[u8]) -> bool {
        match home.len() {
            16 => home
                .try_into()
                .ok()
                .is_some_and(|h: [u8; 16]| self.cache.get(&h).is_some()),
            4 => home
                .try_into()
                .ok()
                .is_some_and(|h: [u8; 4]| self.cache.get_v4(&h).is_some()),
            _ => false,
        }
    }
}
