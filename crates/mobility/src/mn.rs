//! The mobile node, acting for an unmodified host behind the appliance:
//! binding update list, Binding Update (re)transmission and Binding
//! Acknowledgement processing (RFC 6275 11.7, 11.8), movement, DSMIPv6
//! care-of addresses and NAT (RFC 5555 4.1), and its tunnel stage.

use crate::classify::{ClassifierMode, EspClass};
use crate::counters::{MobilityCounters, MobilityDrop, MobilityEvent};
use crate::keying::KeyManagement;
use crate::packet::{self, Upper};
use crate::tunnel::{MnPaths, MnTunnel, Path};
use bitsgw_ipsec_query::IpsecQuery;
use bitsgw_wire::encap::DSMIP_UDP_PORT;
use bitsgw_wire::mh::{
    ba_status, be_status, ipv4_ack_status, mh_type, BindingUpdate, Message, MhOption,
};
use bitsgw_wire::mip6::{MobilePrefixAdvertisement, MobilePrefixSolicitation, ICMPV6_MPA};
use bitsgw_wire::{PacketBuf, Timestamp};
use core::time::Duration;
use std::collections::VecDeque;

/// RFC 6275 13: InitialBindackTimeoutFirstReg, the first retransmission
/// timeout of a first registration with the home agent.
pub const INITIAL_BINDACK_TIMEOUT_FIRST_REG: Duration = Duration::from_millis(1500);
/// RFC 6275 12: INITIAL_BINDACK_TIMEOUT.
pub const INITIAL_BINDACK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a care-of address left behind still takes packets after the
/// BA for the new one (those the home agent sent before it switched).
pub const OLD_CARE_OF_GRACE: Duration = Duration::from_secs(2);
/// RFC 6275 12: MAX_BINDACK_TIMEOUT.
pub const MAX_BINDACK_TIMEOUT: Duration = Duration::from_secs(32);

/// Where the mobile node is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attachment {
    /// On the home link.
    Home,
    /// On a visited network with this IPv6 care-of address.
    V6([u8; 16]),
    /// On a visited network with this IPv4 care-of address (behind a NAT
    /// or not: the home agent tells).
    V4([u8; 4]),
}

impl core::fmt::Display for Attachment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Attachment::Home => f.write_str("home"),
            Attachment::V6(a) => std::net::Ipv6Addr::from(*a).fmt(f),
            Attachment::V4(a) => std::net::Ipv4Addr::from(*a).fmt(f),
        }
    }
}

/// Mobile node settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MnConfig {
    /// IPv6 home address.
    pub home: [u8; 16],
    /// Home agent's IPv6 address.
    pub home_agent: [u8; 16],
    /// Home agent's IPv4 address (for IPv4 care-of addresses).
    pub home_agent_v4: Option<[u8; 4]>,
    /// IPv4 home address to ask for: `Some([0; 4])` asks for one from the
    /// home agent's pool (RFC 5555 3.1.1), `None` asks for none.
    pub home_v4: Option<[u8; 4]>,
    /// Lifetime asked for in Binding Updates.
    pub lifetime: Duration,
    /// Local UDP port of the UDP encapsulation (RFC 5555 4.1).
    pub udp_port: u16,
    /// How the tunnel stage tells the BU from data.
    pub classifier: ClassifierMode,
    /// Whether the node's key management survives movement (its IKE SA
    /// with the home agent can move to a new care-of address): K in its
    /// Binding Updates while that IKE SA exists (RFC 6275 6.1.7, 11.7.1;
    /// see [`crate::keying`]). Never with manual keys.
    pub key_management_mobility: bool,
}

impl MnConfig {
    /// Defaults for a node: 420 s lifetime (a multiple of 4 below the RFC
    /// 6275 13 MaxRtrAdvInterval-based limits), UDP port 4191, API
    /// classifier.
    pub fn new(home: [u8; 16], home_agent: [u8; 16]) -> Self {
        MnConfig {
            home,
            home_agent,
            home_agent_v4: None,
            home_v4: None,
            lifetime: Duration::from_secs(420),
            udp_port: DSMIP_UDP_PORT,
            classifier: ClassifierMode::Api,
            key_management_mobility: false,
        }
    }
}

/// What happened, for the control plane and the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MnEvent {
    /// A BU was sent for this attachment (`retransmission` after a timeout).
    BindingUpdateSent {
        /// The attachment registered.
        attachment: Attachment,
        /// Its sequence number.
        seq: u16,
        /// Whether it is a retransmission.
        retransmission: bool,
    },
    /// The home agent accepted the registration.
    Registered {
        /// The care-of address now in use.
        attachment: Attachment,
        /// Lifetime granted.
        lifetime: Duration,
        /// Whether the home agent saw a NAT (UDP encapsulation from now on).
        nat: bool,
        /// The IPv4 home address, if one was assigned.
        home_v4: Option<[u8; 4]>,
    },
    /// The home agent accepted the de-registration: the node is home.
    Deregistered,
    /// The home agent refused the registration with this status.
    RegistrationFailed {
        /// BA status (RFC 6275 6.1.8).
        status: u8,
    },
    /// The home agent refused the IPv4 home address (RFC 5555 3.2.1).
    HomeV4Refused {
        /// IPv4 Address Acknowledgement status.
        status: u8,
    },
    /// Home prefixes learnt from a Mobile Prefix Advertisement.
    Prefixes(Vec<([u8; 16], u8)>),
    /// The home agent sent a Binding Error (RFC 6275 6.1.9, 11.3.6); with
    /// status 1 (it has no binding for the home address) the node
    /// registers again.
    BindingError {
        /// Binding Error status.
        status: u8,
    },
    /// The home agent asked for a refresh (Binding Refresh Request, RFC
    /// 6275 11.7.4); a Binding Update answers it.
    RefreshRequested,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    seq: u16,
    attachment: Attachment,
    /// K in the BU last sent.
    key_management: bool,
    timeout: Duration,
    next_send: Timestamp,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    attachment: Attachment,
    path: Path,
    lifetime: Duration,
    expires: Timestamp,
    refresh_at: Timestamp,
    nat_refresh: Option<Duration>,
}

/// Whether two paths use the same care-of address (whatever their
/// encapsulation).
fn same_care_of(a: &Path, b: &Path) -> bool {
    match (a, b) {
        (Path::V6 { coa: a }, Path::V6 { coa: b }) => a == b,
        (Path::V4 { coa: a, .. }, Path::V4 { coa: b, .. }) => a == b,
        _ => false,
    }
}

/// The mobile node.
#[derive(Debug)]
pub struct MobileNode {
    cfg: MnConfig,
    tunnel: MnTunnel,
    seq: u16,
    attachment: Attachment,
    owned: Vec<Path>,
    /// Care-of addresses left behind, still taken until the time given.
    retiring: Vec<(Path, Timestamp)>,
    active: Option<Active>,
    pending: Option<Pending>,
    registered_once: bool,
    home_v4: Option<[u8; 4]>,
    prefix_id: u16,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<MnEvent>,
    counters: MobilityCounters,
    /// Whether the packet `handle_network` took last came under the SA
    /// for Binding Acknowledgements.
    arrived_under_ba_sa: bool,
    /// The packet `poll_transmit` handed out last is a BU: the next packet
    /// through the outbound tunnel stage is it, sealed by IPsec.
    sending_bu: bool,
    /// Whether the IKE SA with the home agent exists (K may be set).
    ike_sa: bool,
    /// The care-of address of the last completed registration (home after
    /// a de-registration), whatever movements followed.
    last_registered: Option<Attachment>,
    /// What the key management is to do after registrations.
    key_management: VecDeque<KeyManagement>,
}

impl MobileNode {
    /// A mobile node at home.
    pub fn new(cfg: MnConfig) -> Self {
        MobileNode {
            cfg,
            tunnel: MnTunnel::default(),
            seq: 0,
            attachment: Attachment::Home,
            owned: Vec::new(),
            retiring: Vec::new(),
            active: None,
            pending: None,
            registered_once: false,
            home_v4: None,
            prefix_id: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            counters: MobilityCounters::default(),
            arrived_under_ba_sa: false,
            sending_bu: false,
            ike_sa: false,
            last_registered: None,
            key_management: VecDeque::new(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &MnConfig {
        &self.cfg
    }

    /// Its counters.
    pub fn counters(&self) -> &MobilityCounters {
        &self.counters
    }

    /// Where it is attached now.
    pub fn attachment(&self) -> Attachment {
        self.attachment
    }

    /// The attachment registered with the home agent (the care-of address
    /// data uses), if any.
    pub fn registered(&self) -> Option<Attachment> {
        self.active.map(|a| a.attachment)
    }

    /// Whether a registration is in flight.
    pub fn registering(&self) -> Option<Attachment> {
        self.pending.map(|p| p.attachment)
    }

    /// Whether the home agent reported a NAT on the current path.
    pub fn behind_nat(&self) -> bool {
        self.active.is_some_and(|a| a.nat_refresh.is_some())
    }

    /// The IPv4 home address the home agent assigned.
    pub fn home_v4(&self) -> Option<[u8; 4]> {
        self.home_v4
    }

    fn path_for(&self, attachment: Attachment, udp: bool) -> Option<Path> {
        match attachment {
            Attachment::Home => None,
            Attachment::V6(coa) => Some(Path::V6 { coa }),
            Attachment::V4(coa) => Some(Path::V4 {
                coa,
                port: self.cfg.udp_port,
                udp,
            }),
        }
    }

    /// The paths the tunnel stage uses now.
    pub fn paths(&self) -> MnPaths {
        MnPaths {
            home: self.cfg.home,
            ha: self.cfg.home_agent,
            ha_v4: self.cfg.home_agent_v4,
            active: self.active.map(|a| a.path),
            registering: self
                .pending
                .and_then(|p| self.path_for(p.attachment, false)),
            own_bu: false,
        }
    }

    /// A movement (RFC 6275 11.5, 11.7.1): the node now has `attachment`.
    /// With `keep_old` (make-before-break, the seed's Req #3), data stays
    /// on the registered care-of address until the BA for the new one
    /// arrives; without it the old network is gone at once and data takes
    /// the new care-of address right after the BU (RFC 3776 4.3), before
    /// the BA.
    pub fn handle_move(&mut self, attachment: Attachment, keep_old: bool, now: Timestamp) {
        self.attachment = attachment;
        if !keep_old || attachment == Attachment::Home {
            self.active = None;
            self.owned.clear();
            self.retiring.clear();
        }
        if let Some(p) = self.path_for(attachment, false) {
            self.retiring.retain(|(r, _)| !same_care_of(r, &p));
            if !self.owned.iter().any(|o| same_care_of(o, &p)) {
                self.owned.push(p);
            }
        }
        let timeout = if self.registered_once {
            INITIAL_BINDACK_TIMEOUT
        } else {
            INITIAL_BINDACK_TIMEOUT_FIRST_REG
        };
        self.register(attachment, timeout, now);
    }

    /// Starts a registration of `attachment`: its BU goes now, and again
    /// after `timeout` unless a BA comes.
    fn register(&mut self, attachment: Attachment, timeout: Duration, now: Timestamp) {
        self.pending = Some(Pending {
            seq: self.seq,
            attachment,
            key_management: false,
            timeout,
            next_send: now,
        });
        self.send_bu(false, now);
    }

    /// Sends the BU of the pending registration (RFC 6275 11.7.1: a new,
    /// greater sequence number each time), and arms its retransmission.
    fn send_bu(&mut self, retransmission: bool, now: Timestamp) {
        let Some(mut p) = self.pending else {
            return;
        };
        let home_reg = p.attachment != Attachment::Home;
        self.seq = self.seq.wrapping_add(1);
        p.seq = self.seq;
        p.next_send = now.saturating_add(p.timeout);
        // RFC 6275 11.7.1: K when the key management survives movement and
        // is up; cleared at home (see `crate::keying`).
        p.key_management = self.cfg.key_management_mobility && self.ike_sa && home_reg;
        self.pending = Some(p);
        let lifetime = if home_reg {
            self.cfg.lifetime
        } else {
            Duration::ZERO
        };
        let bu = Message::BindingUpdate(BindingUpdate {
            seq: p.seq,
            ack: true,
            home_registration: true,
            link_local_compat: false,
            key_mgmt_compat: p.key_management,
            lifetime_units: u16::try_from(lifetime.as_secs() / 4).unwrap_or(u16::MAX),
        });
        let mut opts: Vec<MhOption<'_>> = Vec::new();
        match p.attachment {
            // RFC 3776 3.1: the care-of address inside ESP.
            Attachment::V6(coa) => opts.push(MhOption::AlternateCareOf(coa)),
            // RFC 5555 3.1.2, 4.1.
            Attachment::V4(coa) => opts.push(MhOption::Ipv4CareOf(coa)),
            Attachment::Home => {}
        }
        if home_reg {
            if let Some(want) = self.cfg.home_v4 {
                let addr = self.home_v4.unwrap_or(want);
                opts.push(MhOption::Ipv4HomeAddress {
                    prefix_len: 0,
                    request_prefix: false,
                    addr,
                });
            }
        }
        self.out.push_back(packet::mh_packet(
            self.cfg.home,
            self.cfg.home_agent,
            &bu,
            &opts,
        ));
        if self.cfg.classifier == ClassifierMode::Heuristic {
            self.tunnel.heuristic_mut().arm();
        }
        self.counters.event(if retransmission {
            MobilityEvent::BuRetransmitted
        } else {
            MobilityEvent::BuSent
        });
        self.events.push_back(MnEvent::BindingUpdateSent {
            attachment: p.attachment,
            seq: p.seq,
            retransmission,
        });
    }

    /// Refreshes the registration now (also the NAT keepalive, RFC 5555
    /// 4.1: a BU/BA pair refreshes the NAT binding reliably).
    pub fn refresh(&mut self, now: Timestamp) {
        if self.pending.is_none() {
            if let Some(a) = self.active {
                self.register(a.attachment, INITIAL_BINDACK_TIMEOUT, now);
            }
        }
    }

    /// Asks the home agent for the home prefixes (RFC 6275 11.4.2).
    pub fn solicit_prefixes(&mut self) {
        self.prefix_id = self.prefix_id.wrapping_add(1);
        let mut icmp = [0u8; 8];
        let mps = MobilePrefixSolicitation {
            identifier: self.prefix_id,
        };
        if let Ok(n) = mps.emit(&mut icmp, &self.cfg.home, &self.cfg.home_agent) {
            self.out.push_back(packet::icmpv6_packet(
                self.cfg.home,
                self.cfg.home_agent,
                &icmp[..n],
            ));
            self.counters.event(MobilityEvent::PrefixSolicitation);
        }
    }

    /// Tunnel stage, outbound (IPsec -> network): Req #3.
    pub fn handle_protected(
        &mut self,
        q: &impl IpsecQuery,
        buf: &mut PacketBuf,
    ) -> Result<Option<EspClass>, MobilityDrop> {
        let mut paths = self.paths();
        paths.own_bu = core::mem::take(&mut self.sending_bu);
        match self
            .tunnel
            .handle_outbound(q, &paths, self.cfg.classifier, buf)
        {
            Ok(class) => {
                match class {
                    Some(EspClass::BindingUpdate) => {
                        self.counters.event(MobilityEvent::ClassifiedBu)
                    }
                    Some(_) => self.counters.event(MobilityEvent::ClassifiedData),
                    None => {}
                }
                Ok(class)
            }
            Err(reason) => {
                self.counters.drop(reason);
                Err(reason)
            }
        }
    }

    /// RFC 3776 4.2: at home (and on the way there, once the
    /// de-registration is sent), the SPD entries of the tunnel between the
    /// home address and the home agent are inactive: a packet of the home
    /// addresses that they would take goes around IPsec, as it would
    /// without mobility. `received` is true for packets from the network.
    pub fn untunnelled_at_home(&mut self, q: &impl IpsecQuery, received: bool, pkt: &[u8]) -> bool {
        if self.attachment != Attachment::Home || self.active.is_some() {
            return false;
        }
        // Outbound the home address is the source, inbound the destination.
        let home_v4 = self.home_v4.or(self.cfg.home_v4.filter(|a| *a != [0; 4]));
        let ours = match pkt.first().map(|b| b >> 4) {
            Some(6) => packet::arr16(pkt, if received { 24 } else { 8 }) == Some(self.cfg.home),
            Some(4) => {
                let at = if received { 16 } else { 12 };
                home_v4.is_some_and(|h| pkt.get(at..at + 4) == Some(&h[..]))
            }
            _ => false,
        };
        let untunnelled = ours
            && crate::tunnel::in_home_tunnel(q, pkt, received, self.cfg.home, self.cfg.home_agent);
        if untunnelled {
            self.counters.event(MobilityEvent::AtHomeUntunnelled);
        }
        untunnelled
    }

    /// Tunnel stage, inbound (network -> IPsec). It also notes whether the
    /// packet came under the SA for Binding Acknowledgements, which the
    /// protocol module asks when IPsec delivers a BA.
    pub fn handle_network(
        &mut self,
        q: &impl IpsecQuery,
        buf: &mut PacketBuf,
    ) -> Result<(), MobilityDrop> {
        let paths = self.paths();
        let before = buf.len();
        self.arrived_under_ba_sa = false;
        match self.tunnel.handle_inbound(&paths, &self.owned, buf) {
            Ok(spi) => {
                self.arrived_under_ba_sa =
                    spi.is_some_and(|spi| self.tunnel.under_ba_sa(q, &paths, spi));
                if buf.len() < before {
                    self.counters.event(MobilityEvent::Decapsulated);
                }
                Ok(())
            }
            Err(reason) => {
                self.counters.drop(reason);
                Err(reason)
            }
        }
    }

    /// Protocol module: a packet the IPsec stage delivered. Binding Errors
    /// and Binding Refresh Requests, to the home address or to a care-of
    /// address, are the mobile node's (RFC 6275 11.3.6, 11.7.4): the host
    /// behind it runs no Mobile IPv6 and never sees them.
    pub fn handle_delivered(&mut self, buf: &PacketBuf, now: Timestamp) -> crate::ha::Delivered {
        use crate::ha::Delivered;
        let (ha, home) = (self.cfg.home_agent, self.cfg.home);
        let owned = &self.owned;
        let mine = |dst: &[u8; 16]| {
            *dst == home
                || owned
                    .iter()
                    .any(|p| matches!(p, Path::V6 { coa } if coa == dst))
        };
        // Whatever else a correspondent sends the home address, even a
        // Mobility Header this node can not read, is the host's business.
        let pkt = buf.data();
        let from_correspondent = matches!(
            (packet::arr16(pkt, 8), packet::arr16(pkt, 24)),
            (Some(src), Some(dst)) if src != ha && dst == home
        );
        match packet::upper(pkt, |_, dst| mine(dst)) {
            Upper::BadMh | Upper::BadMhChecksum if from_correspondent => Delivered::ToHost,
            Upper::Mh { src, dst, repr, .. } => match repr.message {
                Message::BindingAck(_) if src == ha && dst == home && !self.arrived_under_ba_sa => {
                    // RFC 6275 11.7.3 and RFC 3776 4.1: a BA counts only
                    // under the SA the policies give BAs.
                    self.dropped(MobilityDrop::BaOutsideItsSa)
                }
                Message::BindingAck(ba) if src == ha && dst == home => {
                    let opts: Vec<MhOption<'_>> = repr.options().collect();
                    match self.handle_ba(ba, &opts, now) {
                        Ok(()) => Delivered::Consumed,
                        Err(r) => self.dropped(r),
                    }
                }
                Message::BindingError {
                    status,
                    home_address,
                } => self.handle_binding_error(src, status, home_address, now),
                Message::BindingRefreshRequest => self.handle_refresh_request(src, now),
                _ => Delivered::ToHost,
            },
            Upper::BadMh => self.dropped(MobilityDrop::MhMalformed),
            Upper::BadMhChecksum => self.dropped(MobilityDrop::MhBadChecksum),
            Upper::Icmpv6 { src, dst, icmp }
                if src == ha && dst == home && icmp.first() == Some(&ICMPV6_MPA) =>
            {
                match MobilePrefixAdvertisement::parse(icmp) {
                    Ok(mpa) => {
                        let prefixes = mpa.prefixes().map(|p| (p.prefix, p.prefix_len)).collect();
                        self.counters.event(MobilityEvent::PrefixAdvertisement);
                        self.events.push_back(MnEvent::Prefixes(prefixes));
                        Delivered::Consumed
                    }
                    Err(_) => self.dropped(MobilityDrop::Malformed),
                }
            }
            _ => Delivered::ToHost,
        }
    }

    fn dropped(&mut self, reason: MobilityDrop) -> crate::ha::Delivered {
        self.counters.drop(reason);
        crate::ha::Delivered::Drop(reason)
    }

    /// Whether the node has a Binding Update List entry for `node`: only
    /// its home agent, while it is registered or registering (bitsgw does
    /// no route optimisation, so no correspondent is ever on the list).
    fn on_update_list(&self, node: &[u8; 16]) -> bool {
        *node == self.cfg.home_agent && (self.active.is_some() || self.pending.is_some())
    }

    /// RFC 6275 11.3.6: a Binding Error from a node without a Binding
    /// Update List entry is ignored (spoofed errors must not cost work).
    /// From the home agent, status 1 says it has no binding for the home
    /// address (it lost or expired it): the node registers again at once;
    /// status 2 says it did not know an MH type the node sent, which the
    /// node notes (it sends the home agent nothing but Binding Updates).
    fn handle_binding_error(
        &mut self,
        from: [u8; 16],
        status: u8,
        home_address: [u8; 16],
        now: Timestamp,
    ) -> crate::ha::Delivered {
        if !self.on_update_list(&from) {
            return self.dropped(MobilityDrop::NoBindingUpdateListEntry);
        }
        self.counters.event(MobilityEvent::BeReceived);
        self.events.push_back(MnEvent::BindingError { status });
        let about_us = home_address == self.cfg.home || home_address == [0; 16];
        if status == be_status::UNKNOWN_HAO_BINDING && about_us {
            self.register_again(now);
        }
        crate::ha::Delivered::Consumed
    }

    /// RFC 6275 11.7.4 (and 6.1.2): the home agent asks for a new Binding
    /// Update before the binding's lifetime ends; the node answers with
    /// one (a new, greater sequence number, A and H set). A request from
    /// a node it has no Binding Update List entry for is ignored.
    fn handle_refresh_request(&mut self, from: [u8; 16], now: Timestamp) -> crate::ha::Delivered {
        if !self.on_update_list(&from) {
            return self.dropped(MobilityDrop::NoBindingUpdateListEntry);
        }
        self.counters.event(MobilityEvent::BrrAnswered);
        self.events.push_back(MnEvent::RefreshRequested);
        // A Binding Update already in flight answers it too.
        self.refresh(now);
        crate::ha::Delivered::Consumed
    }

    /// Registers the current attachment again, unless a registration is
    /// in flight (its BU does it) or the node is home.
    fn register_again(&mut self, now: Timestamp) {
        if self.pending.is_none() && self.attachment != Attachment::Home {
            self.register(self.attachment, INITIAL_BINDACK_TIMEOUT, now);
        }
    }

    /// RFC 6275 11.7.3 (and RFC 5555 4.1 for its options).
    fn handle_ba(
        &mut self,
        ba: bitsgw_wire::mh::BindingAck,
        opts: &[MhOption<'_>],
        now: Timestamp,
    ) -> Result<(), MobilityDrop> {
        let Some(p) = self.pending else {
            return Err(MobilityDrop::UnexpectedBa);
        };
        if ba.status == ba_status::SEQ_OUT_OF_WINDOW {
            // RFC 6275 11.7.3: the BA carries the home agent's last
            // accepted number (so it need not match ours): go on from it.
            self.seq = ba.seq;
            self.send_bu(true, now);
            return Ok(());
        }
        if ba.seq != p.seq {
            return Err(MobilityDrop::UnexpectedBa);
        }
        self.counters.event(MobilityEvent::BaAccepted);
        if ba.status >= 128 {
            self.pending = None;
            self.counters.event(MobilityEvent::RegistrationFailed);
            self.events
                .push_back(MnEvent::RegistrationFailed { status: ba.status });
            return Ok(());
        }
        self.pending = None;
        let over_udp = opts
            .iter()
            .any(|o| matches!(o, MhOption::NatDetection { .. }));
        self.follow_with_key_management(&p, ba.key_mgmt_compat, over_udp);
        if p.attachment == Attachment::Home {
            self.active = None;
            self.owned.clear();
            self.retiring.clear();
            self.events.push_back(MnEvent::Deregistered);
            return Ok(());
        }
        let mut nat_refresh = None;
        let mut forced = false;
        let mut refresh_hint = None;
        for o in opts {
            match *o {
                MhOption::NatDetection {
                    udp_forced,
                    refresh_time,
                } => {
                    nat_refresh = Some(Duration::from_secs(u64::from(refresh_time)));
                    forced = udp_forced;
                }
                MhOption::Ipv4AddressAck { status, addr, .. } => {
                    if status == ipv4_ack_status::SUCCESS {
                        self.home_v4 = Some(addr);
                    } else {
                        self.events.push_back(MnEvent::HomeV4Refused { status });
                    }
                }
                MhOption::BindingRefreshAdvice { interval } => {
                    refresh_hint = Some(Duration::from_secs(u64::from(interval) * 4));
                }
                _ => {}
            }
        }
        let lifetime = Duration::from_secs(u64::from(ba.lifetime_units) * 4);
        // Refresh at 80 % of the lifetime, or as the home agent advised,
        // and within the NAT refresh time (RFC 5555 4.1).
        let mut refresh = refresh_hint.unwrap_or(lifetime.mul_f64(0.8)).min(lifetime);
        if let Some(n) = nat_refresh {
            refresh = refresh.min(n);
        }
        let udp = nat_refresh.is_some() || forced;
        let Some(path) = self.path_for(p.attachment, udp) else {
            return Ok(());
        };
        self.active = Some(Active {
            attachment: p.attachment,
            path,
            lifetime,
            expires: now.saturating_add(lifetime),
            refresh_at: now.saturating_add(refresh),
            nat_refresh,
        });
        // The old network is left once the new registration holds; what
        // the home agent sent there before it switched is still taken for
        // a moment (make-before-break loses nothing in flight).
        let same = |o: &Path| same_care_of(o, &path);
        let until = now.saturating_add(OLD_CARE_OF_GRACE);
        for o in &self.owned {
            if !same(o) && !self.retiring.iter().any(|(r, _)| r == o) {
                self.retiring.push((*o, until));
            }
        }
        for o in self.owned.iter_mut().filter(|o| same(o)) {
            *o = path;
        }
        self.registered_once = true;
        self.events.push_back(MnEvent::Registered {
            attachment: p.attachment,
            lifetime,
            nat: nat_refresh.is_some(),
            home_v4: self.home_v4,
        });
        if ba.status == ba_status::ACCEPTED_PREFIX_DISCOVERY {
            self.solicit_prefixes();
        }
        Ok(())
    }

    /// RFC 6275 11.7.3: after an accepted registration with K in its BU,
    /// the IKE SA moves to the new care-of address if the BA has K too,
    /// else it is established again from there; nothing when the care-of
    /// address is the one registered before (a refresh). A BA with the
    /// NAT Detection option (`over_udp`, RFC 5555 4.1) has it established
    /// again even with K (see `crate::keying`).
    fn follow_with_key_management(&mut self, p: &Pending, ba_k: bool, over_udp: bool) {
        let previous = self.last_registered.replace(p.attachment);
        use std::net::IpAddr;
        let (home_agent, care_of) = match p.attachment {
            Attachment::V6(a) => (IpAddr::from(self.cfg.home_agent), IpAddr::from(a)),
            // Registered, so the home agent has an IPv4 address.
            Attachment::V4(a) => (
                IpAddr::from(self.cfg.home_agent_v4.unwrap_or_default()),
                IpAddr::from(a),
            ),
            Attachment::Home => return,
        };
        if !p.key_management || previous == Some(p.attachment) {
            return;
        }
        let home = self.cfg.home;
        let k = if ba_k && !over_udp {
            KeyManagement::Move {
                home,
                home_agent,
                care_of,
            }
        } else {
            KeyManagement::Reestablish {
                home,
                home_agent,
                care_of,
            }
        };
        crate::keying::queue(&mut self.key_management, k);
    }

    /// Whether the IKE SA with the home agent exists: with
    /// [`MnConfig::key_management_mobility`], the next Binding Updates
    /// carry K (RFC 6275 11.7.1).
    pub fn set_ike_sa(&mut self, established: bool) {
        self.ike_sa = established;
    }

    /// What the key management is to do after a registration (see
    /// [`crate::keying`]).
    pub fn poll_key_management(&mut self) -> Option<KeyManagement> {
        self.key_management.pop_front()
    }

    /// The next packet the protocol module originated (BU, MPS), for the
    /// IPsec stage's outbound side.
    pub fn poll_transmit(&mut self, buf: &mut PacketBuf) -> bool {
        match self.out.pop_front() {
            Some(p) => {
                self.sending_bu = packet::mh_type_of(&p) == Some(mh_type::BU);
                buf.set(&p).is_ok()
            }
            None => false,
        }
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<MnEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` next has work.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let a = self.pending.map(|p| p.next_send);
        let b = self.active.map(|a| a.refresh_at.min(a.expires));
        let c = self.retiring.iter().map(|(_, t)| *t).min();
        [a, b, c].into_iter().flatten().min()
    }

    /// Retransmits with exponential back-off (RFC 6275 11.8), refreshes
    /// before the lifetime ends and within the NAT refresh time, and drops
    /// a registration whose lifetime ended.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.retiring.iter().any(|(_, t)| *t <= now) {
            let gone: Vec<Path> = self
                .retiring
                .iter()
                .filter(|(_, t)| *t <= now)
                .map(|(p, _)| *p)
                .collect();
            self.retiring.retain(|(_, t)| *t > now);
            self.owned.retain(|o| !gone.contains(o));
        }
        if let Some(mut p) = self.pending {
            if p.next_send <= now {
                p.timeout = (p.timeout * 2).min(MAX_BINDACK_TIMEOUT);
                self.pending = Some(p);
                self.send_bu(true, now);
            }
        }
        if let Some(a) = self.active {
            if a.expires <= now {
                self.active = None;
            } else if a.refresh_at <= now && self.pending.is_none() {
                self.refresh(now);
                if let Some(active) = self.active.as_mut() {
                    active.refresh_at = now.saturating_add(a.lifetime);
                }
            }
        }
    }
}
