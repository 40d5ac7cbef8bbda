//! The `gateway` role: a host-side port, the IPsec stage, a network-side
//! port (DESIGN.md's packet path without the mobility modules).
//!
//! Inline on Ethernet the appliance is a bump in the wire: frames keep
//! their Ethernet header (the host's next hop stays the next hop), only
//! the IP packet inside is transformed, behind its VLAN tags if it has
//! them (an 802.1Q C-tag, an 802.1ad S-tag, both), which it leaves with.
//! ARP passes unchanged; other frames that are not IP are dropped and
//! counted by EtherType unless the configuration lets them pass
//! ([`crate::layer2`]). Raw-IP ports (TUN, raw captures) carry packets
//! alone.
//!
//! The appliance may have addresses of its own on either side: a
//! [`LocalEndpoint`] per side is offered the side's Ethernet frames first
//! (see [`crate::endpoint`] for which) and answers what is for it.
//!
//! Routed on Ethernet ([`Gateway::set_routed`], [`crate::routed`]) the
//! appliance is the hosts' router and a host on the network: only IP
//! frames sent to its MAC are forwarded, each packet leaves from its MAC
//! to its next hop's, resolved by ARP or Neighbor Discovery
//! ([`crate::neighbor`]); ARP and other frames are never passed across.
//! Routed mode has no VLANs: tagged frames are dropped and counted as
//! [`PipelineDrop::Layer2`] under their outer tag's TPID.

use crate::counters::{PipelineCounters, PipelineDrop};
use crate::endpoint::{network_kind, LocalEndpoint, NetworkKind};
use crate::layer2::Layer2Policy;
use crate::neighbor::{self, ARP_FRAME_LEN, NS_FRAME_LEN};
use crate::routed::Routed;
use bitsgw_ipsec::walked::Walked;
use bitsgw_ipsec::{Disposition, Event, IpsecStage};
use bitsgw_mobility::counters::{MobilityCounters, MobilityDrop};
use bitsgw_mobility::ha::{Delivered, HomeAgent};
use bitsgw_mobility::mn::MobileNode;
use bitsgw_wire::ether::{self, Layer2, LinkType, SavedHeader};
use bitsgw_wire::{PacketBuf, Timestamp};
use std::net::IpAddr;

/// Which port a frame came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The protected side: the unmodified host(s).
    Host,
    /// The unprotected side: the network.
    Network,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Host => Side::Network,
            Side::Network => Side::Host,
        }
    }

    /// "host" or "network".
    pub fn name(self) -> &'static str {
        match self {
            Side::Host => "host",
            Side::Network => "network",
        }
    }
}

/// Where a trace tap sits on the packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TapPoint {
    /// Frames crossing the host port, both ways (cleartext).
    Host,
    /// IP packets between the IPsec stage and the stage below it, both
    /// ways, always as raw IP. In the gateway role nothing sits below
    /// IPsec, so this shows the packets of [`TapPoint::Wire`] without
    /// their Ethernet headers.
    AfterIpsec,
    /// Frames crossing the network port, both ways.
    Wire,
}

impl TapPoint {
    /// Every tap point.
    pub const ALL: [TapPoint; 3] = [TapPoint::Host, TapPoint::AfterIpsec, TapPoint::Wire];

    /// A file-name friendly name.
    pub fn name(self) -> &'static str {
        match self {
            TapPoint::Host => "host",
            TapPoint::AfterIpsec => "after-ipsec",
            TapPoint::Wire => "wire",
        }
    }
}

/// Receives copies of frames at tap points (a pcap writer, a test).
pub trait Tap {
    /// One frame at `point`.
    fn tap(&mut self, point: TapPoint, now: Timestamp, link: LinkType, frame: &[u8]);
}

/// A tap that discards everything (no tracing).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTap;

impl Tap for NoTap {
    #[inline]
    fn tap(&mut self, _: TapPoint, _: Timestamp, _: LinkType, _: &[u8]) {}
}

/// The mobility stage around the IPsec stage, in the `ha` and `mn` roles
/// (DESIGN.md's packet path): its tunnel stage below IPsec, its protocol
/// module above.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per appliance
pub enum Mobility {
    /// A home agent.
    HomeAgent(HomeAgent),
    /// A mobile node acting for the host behind the appliance.
    MobileNode(MobileNode),
}

impl Mobility {
    fn handle_network(
        &mut self,
        stage: &IpsecStage,
        buf: &mut PacketBuf,
        now: Timestamp,
    ) -> Result<(), MobilityDrop> {
        match self {
            Mobility::HomeAgent(ha) => ha.handle_network(&stage.query(), buf, now),
            Mobility::MobileNode(mn) => mn.handle_network(&stage.query(), buf),
        }
    }

    fn handle_protected(
        &mut self,
        stage: &IpsecStage,
        buf: &mut PacketBuf,
        now: Timestamp,
    ) -> Result<(), MobilityDrop> {
        match self {
            Mobility::HomeAgent(ha) => ha.handle_protected(&stage.query(), buf, now),
            Mobility::MobileNode(mn) => mn.handle_protected(&stage.query(), buf).map(|_| ()),
        }
    }

    fn untunnelled_at_home(&mut self, stage: &IpsecStage, from: Side, pkt: &[u8]) -> bool {
        let received = from == Side::Network;
        match self {
            Mobility::HomeAgent(ha) => ha.untunnelled_at_home(&stage.query(), received, pkt),
            Mobility::MobileNode(mn) => mn.untunnelled_at_home(&stage.query(), received, pkt),
        }
    }

    fn handle_delivered(&mut self, buf: &PacketBuf, now: Timestamp) -> Delivered {
        match self {
            Mobility::HomeAgent(ha) => ha.handle_delivered(buf, now),
            Mobility::MobileNode(mn) => mn.handle_delivered(buf, now),
        }
    }

    fn poll_transmit(&mut self, buf: &mut PacketBuf) -> bool {
        match self {
            Mobility::HomeAgent(ha) => ha.poll_transmit(buf),
            Mobility::MobileNode(mn) => mn.poll_transmit(buf),
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        match self {
            Mobility::HomeAgent(ha) => ha.handle_timeout(now),
            Mobility::MobileNode(mn) => mn.handle_timeout(now),
        }
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        match self {
            Mobility::HomeAgent(ha) => ha.poll_timeout(),
            Mobility::MobileNode(mn) => mn.poll_timeout(),
        }
    }

    /// The mobility stage's counters.
    pub fn counters(&self) -> &MobilityCounters {
        match self {
            Mobility::HomeAgent(ha) => ha.counters(),
            Mobility::MobileNode(mn) => mn.counters(),
        }
    }
}

/// What became of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// What the IPsec stage decided (or, for frames that never reach it,
    /// what the pipeline did: `Forward`/`Deliver` for passed non-IP frames).
    Ipsec(Disposition),
    /// The mobility stage dropped it, counted under this reason.
    MobilityDrop(MobilityDrop),
    /// The pipeline dropped it before any stage (not for this router, a
    /// layer-2 frame it does not pass, a packet for the appliance it does
    /// not serve), counted under this reason.
    PipelineDrop(PipelineDrop),
    /// The mobility protocol module took it (a BU, a BA, a prefix
    /// solicitation); any answer has been sent.
    MobilityConsumed,
}

impl Outcome {
    /// The IPsec stage's disposition, if the frame ended there.
    pub fn ipsec(self) -> Option<Disposition> {
        match self {
            Outcome::Ipsec(d) => Some(d),
            _ => None,
        }
    }
}

/// The gateway pipeline core.
pub struct Gateway {
    stage: IpsecStage,
    mobility: Option<Mobility>,
    /// The Ethernet header of the last IP frame sent on each side, for the
    /// packets the mobility stage originates (inline, they leave as the
    /// host's traffic does).
    last_l2: [Option<SavedHeader>; 2],
    /// The home agent's MAC on the home link (the host side), for proxy
    /// Neighbor Discovery and ARP.
    home_link_mac: Option<[u8; 6]>,
    counters: PipelineCounters,
    spare: Option<PacketBuf>,
    /// The appliance's own endpoints: host side, network side.
    endpoints: [Option<Box<dyn LocalEndpoint>>; 2],
    /// Routed mode on Ethernet ports (none: inline).
    routed: Option<Routed>,
    /// Which non-IP frames pass inline.
    layer2: Layer2Policy,
    /// Sequence leases of the outbound SAs (see [`crate::lease`]).
    leases: Option<crate::lease::LeaseServer>,
}

impl core::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gateway")
            .field("stage", &self.stage)
            .field("mobility", &self.mobility)
            .field("counters", &self.counters)
            .field("host_endpoint", &self.endpoints[0].is_some())
            .field("network_endpoint", &self.endpoints[1].is_some())
            .field("routed", &self.routed.is_some())
            .finish_non_exhaustive()
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Host => 0,
        Side::Network => 1,
    }
}

impl Gateway {
    /// A gateway around `stage`.
    pub fn new(stage: IpsecStage) -> Self {
        Gateway {
            stage,
            mobility: None,
            last_l2: [None, None],
            home_link_mac: None,
            counters: PipelineCounters::default(),
            spare: Some(PacketBuf::new()),
            endpoints: [None, None],
            routed: None,
            layer2: Layer2Policy::default(),
            leases: None,
        }
    }

    /// Sets which non-IP frames pass inline (by default ARP alone).
    pub fn set_layer2_policy(&mut self, policy: Layer2Policy) {
        self.layer2 = policy;
    }

    /// Makes the gateway routed on its Ethernet ports (see
    /// [`crate::routed`]); clones of `routed` given to other workers share
    /// its neighbor tables. Raw-IP ports are not affected.
    pub fn set_routed(&mut self, routed: Routed) {
        self.routed = Some(routed);
    }

    /// Grants the stage's outbound SAs sequence leases from `keeper`.
    pub fn set_lease_keeper(&mut self, keeper: std::sync::Arc<dyn crate::lease::LeaseKeeper>) {
        self.leases = Some(crate::lease::LeaseServer::new(keeper));
    }

    /// Answers the stage's lease requests (see
    /// [`crate::lease::LeaseServer::serve`]); without a keeper they stay
    /// unanswered, and those SAs send nothing.
    pub fn serve_leases(&mut self, now: Timestamp) {
        if let Some(leases) = self.leases.as_mut() {
            leases.serve(&mut self.stage, now);
        }
    }

    /// The routed mode's settings and neighbor tables, if routed.
    pub fn routed(&self) -> Option<&Routed> {
        self.routed.as_ref()
    }

    /// Gives the appliance its own host stack on `side` (replacing any
    /// earlier one). Only Ethernet frames are offered to it.
    pub fn set_endpoint(&mut self, side: Side, endpoint: Box<dyn LocalEndpoint>) {
        self.endpoints[side_index(side)] = Some(endpoint);
    }

    /// Whether the appliance has its own host stack on `side`.
    pub fn has_endpoint(&self, side: Side) -> bool {
        self.endpoints[side_index(side)].is_some()
    }

    /// Puts the mobility stage around the IPsec stage (the `ha` and `mn`
    /// roles).
    pub fn set_mobility(&mut self, mobility: Mobility) {
        self.mobility = Some(mobility);
    }

    /// The home agent's link-layer address on the home link (the host
    /// side): with it the home agent answers Neighbor Solicitations and ARP
    /// requests for the home addresses of nodes that are away (RFC 6275
    /// 10.4.1), on Ethernet ports.
    pub fn set_home_link_mac(&mut self, mac: [u8; 6]) {
        self.home_link_mac = Some(mac);
    }

    /// The mobility stage, if the role has one.
    pub fn mobility(&self) -> Option<&Mobility> {
        self.mobility.as_ref()
    }

    /// The mobility stage, mutable (movements, refreshes).
    pub fn mobility_mut(&mut self) -> Option<&mut Mobility> {
        self.mobility.as_mut()
    }

    /// The IPsec stage.
    pub fn stage(&self) -> &IpsecStage {
        &self.stage
    }

    /// The IPsec stage, mutable (control operations).
    pub fn stage_mut(&mut self) -> &mut IpsecStage {
        &mut self.stage
    }

    /// Gives the IPsec stage back.
    pub fn into_stage(self) -> IpsecStage {
        self.stage
    }

    /// The pipeline's own counters.
    pub fn counters(&self) -> &PipelineCounters {
        &self.counters
    }

    /// Counts a drop that happened around the core (queue full, send
    /// failure), so it is not lost.
    pub fn count_drop(&mut self, reason: PipelineDrop) {
        self.counters.record(reason);
    }

    /// Counts `n` such drops.
    pub fn count_drops(&mut self, reason: PipelineDrop, n: u64) {
        self.counters.record_n(reason, n);
    }

    /// Drives lifetimes, reassembly and mobility timers. What the timers
    /// make the endpoints or the mobility stage send is sent by
    /// [`Gateway::poll_endpoints`].
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.stage.handle_timeout(now);
        if let Some(m) = self.mobility.as_mut() {
            m.handle_timeout(now);
        }
        if let Some(r) = &self.routed {
            for side in [Side::Host, Side::Network] {
                if let Some(mut t) = r.table(side) {
                    let dropped = t.handle_timeout(now);
                    self.counters
                        .record_n(PipelineDrop::NeighborUnresolved, dropped);
                }
            }
        }
    }

    /// When `handle_timeout` next has work. (Endpoints have no timers of
    /// their own; `poll_endpoints` is called on every worker loop.)
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let m = self.mobility.as_ref().and_then(Mobility::poll_timeout);
        let n = self.routed.as_ref().and_then(|r| {
            [Side::Host, Side::Network]
                .into_iter()
                .filter_map(|s| r.table(s).and_then(|t| t.poll_timeout()))
                .min()
        });
        [self.stage.poll_timeout(), m, n]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sends what the endpoints want to send of their own accord (their
    /// timers, replies a shared endpoint queued while another worker
    /// handled the request), on their sides, always as Ethernet.
    pub fn poll_endpoints(
        &mut self,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) {
        for side in [Side::Host, Side::Network] {
            self.flush_endpoint(side, now, emit, tap);
            self.flush_neighbors(side, now, emit, tap);
        }
        self.flush_mobility(now, emit, tap);
    }

    /// Routed mode: sends the solicitations and the released packets of
    /// the neighbor table of `side`.
    fn flush_neighbors(
        &mut self,
        side: Side,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) {
        let Some(r) = self.routed.take() else {
            return;
        };
        self.flush_solicitations(&r, side, now, emit, tap);
        self.flush_released(&r, side, now, emit, tap);
        self.routed = Some(r);
    }

    /// Sends an ARP request or a Neighbor Solicitation for each next hop
    /// the table of `side` asks for, from the appliance's address and MAC
    /// there.
    fn flush_solicitations(
        &mut self,
        r: &Routed,
        side: Side,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) {
        let own = r.side(side);
        let mut arp = [0u8; ARP_FRAME_LEN];
        let mut ns = [0u8; NS_FRAME_LEN];
        loop {
            let Some(target) = r.table(side).and_then(|mut t| t.poll_solicit(now)) else {
                return;
            };
            let frame: &[u8] = match (target, own.source_for(target)) {
                (IpAddr::V4(t), Some(IpAddr::V4(s))) => {
                    neighbor::arp_request(own.mac, s.octets(), t.octets(), &mut arp);
                    &arp
                }
                (IpAddr::V6(t), Some(IpAddr::V6(s))) => {
                    neighbor::neighbor_solicitation(own.mac, s.octets(), t.octets(), &mut ns);
                    &ns
                }
                // No address of that family to ask from (the configuration
                // prevents it): what is held times out, counted.
                _ => continue,
            };
            self.send(side, LinkType::Ethernet, frame, now, emit, tap);
        }
    }

    /// Sends the packets the table of `side` held and can now release.
    fn flush_released(
        &mut self,
        r: &Routed,
        side: Side,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) {
        let mut buf = self.spare.take().unwrap_or_default();
        while let Some(mac) = r.table(side).and_then(|mut t| t.poll_release(&mut buf)) {
            self.send_to_mac(side, mac, r.side(side).mac, &mut buf, now, emit, tap);
        }
        self.spare = Some(buf);
    }

    /// Routed mode: what a frame that arrived on `from` teaches the
    /// neighbor table, and whether it stops here: `Some` if it was for the
    /// appliance's endpoint or is not to be forwarded (not IP, to a group
    /// address, to another station's MAC); `None` if it is an IP packet
    /// for the IPsec stage.
    fn routed_receive(
        &mut self,
        from: Side,
        frame: &[u8],
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) -> Option<Outcome> {
        let r = self.routed.take()?;
        let out = self.routed_receive_with(&r, from, frame, now, emit, tap);
        self.routed = Some(r);
        out
    }

    fn routed_receive_with(
        &mut self,
        r: &Routed,
        from: Side,
        frame: &[u8],
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) -> Option<Outcome> {
        let own = r.side(from);
        if let Some((addr, mac)) = neighbor::glean(frame) {
            let ours = match addr {
                IpAddr::V4(a) => own.is_own(&a.octets()),
                IpAddr::V6(a) => own.is_own(&a.octets()),
            };
            if own.on_link(addr) && !ours && mac != own.mac {
                let release = r.table(from).is_some_and(|mut t| {
                    t.learn(addr, mac, now, true);
                    t.release_due()
                });
                if release {
                    self.flush_released(r, from, now, emit, tap);
                }
            }
        }
        // A short frame: the inline path counts it.
        let ethertype = ether::ethertype(frame)?;
        if is_tagged(frame) {
            return Some(self.drop_layer2(ethertype));
        }
        let is_ip = ethertype == ether::ETHERTYPE_IPV4 || ethertype == ether::ETHERTYPE_IPV6;
        let group = frame[0] & 1 == 1;
        let to_me = frame[..6] == own.mac;
        let pkt = &frame[ether::HEADER_LEN..];
        let for_own_address = is_ip && ip_dst(pkt).is_some_and(|d| own.is_own(d));
        if (!is_ip || group || for_own_address) && self.endpoints[side_index(from)].is_some() {
            if let Some(o) = self.offer_local(from, frame, now, emit, tap) {
                return Some(o);
            }
        }
        if !is_ip || group || !to_me {
            self.counters.record(PipelineDrop::NotRouted);
            return Some(Outcome::PipelineDrop(PipelineDrop::NotRouted));
        }
        None
    }

    /// Sends what the mobility protocol module originated (BU, BA, BE,
    /// prefix discovery) through the IPsec stage and the tunnel stage, as
    /// host traffic goes.
    fn flush_mobility(
        &mut self,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) {
        let mut buf = self.spare.take().unwrap_or_default();
        while self
            .mobility
            .as_mut()
            .is_some_and(|m| m.poll_transmit(&mut buf))
        {
            let l2 = self.last_l2[side_index(Side::Network)];
            let link = match l2 {
                // Routed: every packet gets its next hop's header.
                _ if self.routed.is_some() => LinkType::Ethernet,
                Some(_) => LinkType::Ethernet,
                None => LinkType::RawIp,
            };
            let d = self.stage.handle_outbound(&mut buf, now);
            let l2 = l2.unwrap_or_default();
            let _ = self.after_outbound(d, link, &l2, &mut buf, now, emit, tap);
        }
        self.spare = Some(buf);
        self.announce_away(now, emit, tap);
    }

    /// RFC 6275 10.4.1: when a node goes away, the home agent multicasts a
    /// Neighbor Advertisement (Override set) for its home address, and a
    /// gratuitous ARP for its IPv4 home address, on the home link.
    fn announce_away(
        &mut self,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) {
        let (Some(mac), Some(Mobility::HomeAgent(ha))) =
            (self.home_link_mac, self.mobility.as_mut())
        else {
            return;
        };
        let from = ha.config().address;
        let mut frames = Vec::new();
        while let Some((home, home_v4)) = ha.poll_newly_away() {
            let all_nodes = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            frames.push(crate::proxy_nd::neighbor_advertisement(
                mac,
                crate::proxy_nd::ALL_NODES_MAC,
                from,
                all_nodes,
                home,
                false,
                true,
            ));
            if let Some(v4) = home_v4 {
                frames.push(crate::proxy_nd::gratuitous_arp(mac, v4));
            }
        }
        for f in frames {
            self.send(Side::Host, LinkType::Ethernet, &f, now, emit, tap);
        }
    }

    fn flush_endpoint(
        &mut self,
        side: Side,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) {
        let Some(mut ep) = self.endpoints[side_index(side)].take() else {
            return;
        };
        ep.poll_transmit(now, &mut |frame| {
            self.send(side, LinkType::Ethernet, frame, now, emit, tap);
        });
        self.endpoints[side_index(side)] = Some(ep);
    }

    /// Offers an Ethernet frame from `from` to that side's endpoint.
    /// `Some` if the frame stops here (consumed or refused).
    fn offer_local(
        &mut self,
        from: Side,
        frame: &[u8],
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) -> Option<Outcome> {
        let ep = self.endpoints[side_index(from)].as_mut()?;
        if from == Side::Network {
            match network_kind(frame) {
                NetworkKind::Offer => {}
                NetworkKind::Ike if ep.takes_ike() => {}
                NetworkKind::Pass | NetworkKind::Ike => return None,
                NetworkKind::Other => {
                    if ep.is_addressed_to_me(frame) {
                        self.counters.record(PipelineDrop::LocalRefused);
                        return Some(Outcome::PipelineDrop(PipelineDrop::LocalRefused));
                    }
                    return None;
                }
            }
        }
        if !ep.handle_frame(frame, now) {
            return None;
        }
        self.counters.local_delivered += 1;
        self.flush_endpoint(from, now, emit, tap);
        Some(Outcome::Ipsec(Disposition::Deliver))
    }

    /// Drops a frame for its layer 2, counted under `ethertype`.
    fn drop_layer2(&mut self, ethertype: u16) -> Outcome {
        self.counters.record(PipelineDrop::Layer2);
        self.counters.layer2_dropped.record(ethertype);
        Outcome::PipelineDrop(PipelineDrop::Layer2)
    }

    /// The next IPsec event for the control plane.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.stage.poll_event()
    }

    /// Handles one frame that arrived from `from`, and calls `emit` for
    /// each frame to send (with the side to send it on). `buf` is used in
    /// place and its contents are unspecified afterwards.
    pub fn handle_frame(
        &mut self,
        from: Side,
        link: LinkType,
        buf: &mut PacketBuf,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) -> Outcome {
        self.handle_frame_walked(from, link, buf, None, now, emit, tap)
    }

    /// [`Gateway::handle_frame`] of a frame the receive thread has walked
    /// (and classified): the gateway and the IPsec stage read `walked`
    /// instead of walking it again.
    #[allow(clippy::too_many_arguments)] // one frame's whole context
    pub fn handle_frame_walked(
        &mut self,
        from: Side,
        link: LinkType,
        buf: &mut PacketBuf,
        walked: Option<&FrameWalk>,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) -> Outcome {
        let o = self.handle_frame_inner(from, link, buf, walked, now, emit, tap);
        if self.mobility.is_some() {
            self.flush_mobility(now, emit, tap);
        }
        o
    }

    #[allow(clippy::too_many_arguments)] // one frame's whole context
    fn handle_frame_inner(
        &mut self,
        from: Side,
        link: LinkType,
        buf: &mut PacketBuf,
        walked: Option<&FrameWalk>,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) -> Outcome {
        match from {
            Side::Host => self.counters.host_rx.add(buf.len()),
            Side::Network => self.counters.net_rx.add(buf.len()),
        }
        let rx_point = match from {
            Side::Host => TapPoint::Host,
            Side::Network => TapPoint::Wire,
        };
        tap.tap(rx_point, now, link, buf.data());
        let mut l2 = SavedHeader::default();
        if let (Side::Host, LinkType::Ethernet, Some(mac), Some(Mobility::HomeAgent(ha))) =
            (from, link, self.home_link_mac, self.mobility.as_mut())
        {
            let reply = crate::proxy_nd::proxy_reply(buf.data(), mac, ha.config().address, |a| {
                ha.is_away(a)
            });
            if let Some(reply) = reply {
                ha.proxy_answered();
                self.send(Side::Host, link, &reply, now, emit, tap);
                return Outcome::MobilityConsumed;
            }
        }
        if link == LinkType::Ethernet && self.routed.is_some() {
            if let Some(o) = self.routed_receive(from, buf.data(), now, emit, tap) {
                return o;
            }
        } else if link == LinkType::Ethernet
            && self.endpoints[side_index(from)].is_some()
            && !is_tagged(buf.data())
        {
            // The appliance's own stack has no VLANs: tagged frames go the
            // IP path below.
            if let Some(o) = self.offer_local(from, buf.data(), now, emit, tap) {
                return o;
            }
        }
        if link == LinkType::Ethernet {
            let layer2 = walked
                .and_then(|w| w.layer2)
                .or_else(|| Layer2::parse(buf.data()));
            let Some(layer2) = layer2 else {
                self.counters.record(PipelineDrop::BadFrame);
                return Outcome::Ipsec(Disposition::Drop(bitsgw_ipsec::DropReason::Malformed));
            };
            if !layer2.is_ip() {
                if !self.layer2.passes(layer2.ethertype) {
                    // It may carry IP the SPD would protect: fail closed.
                    return self.drop_layer2(layer2.ethertype);
                }
                self.counters.non_ip_passed += 1;
                let to = from.other();
                self.send(to, link, buf.data(), now, emit, tap);
                return Outcome::Ipsec(match from {
                    Side::Host => Disposition::Forward,
                    Side::Network => Disposition::Deliver,
                });
            }
            let Some(saved) = SavedHeader::copy_from(buf.data(), &layer2) else {
                self.counters.record(PipelineDrop::BadFrame);
                return Outcome::Ipsec(Disposition::Drop(bitsgw_ipsec::DropReason::Malformed));
            };
            l2 = saved;
            // Cannot fail: the frame holds the whole header.
            let _ = buf.trim_front(layer2.header_len);
        }
        // The IP walk still describes the packet unless the mobility stage
        // had it first (it may take a tunnel header off).
        let mut ip = walked.map(|w| &w.ip);
        if from == Side::Network {
            if let Some(m) = self.mobility.as_mut() {
                ip = None;
                if let Err(reason) = m.handle_network(&self.stage, buf, now) {
                    return Outcome::MobilityDrop(reason);
                }
            }
            tap.tap(TapPoint::AfterIpsec, now, LinkType::RawIp, buf.data());
        }
        // RFC 3776 4.2: at home the tunnel's SPD entries are inactive.
        let untunnelled = self
            .mobility
            .as_mut()
            .is_some_and(|m| m.untunnelled_at_home(&self.stage, from, buf.data()));
        let d = match from {
            Side::Host if untunnelled => Disposition::Forward,
            Side::Network if untunnelled => Disposition::Deliver,
            Side::Host => self.stage.handle_outbound_walked(buf, now, ip),
            Side::Network => self.stage.handle_inbound_walked(buf, now, ip),
        };
        if from == Side::Network && matches!(d, Disposition::Deliver) {
            if let Some(m) = self.mobility.as_mut() {
                match m.handle_delivered(buf, now) {
                    Delivered::ToHost => {}
                    Delivered::Consumed => return Outcome::MobilityConsumed,
                    Delivered::Drop(reason) => return Outcome::MobilityDrop(reason),
                }
            }
        }
        self.after_outbound(d, link, &l2, buf, now, emit, tap)
    }

    /// Sends what the IPsec stage produced: protected packets (through the
    /// mobility tunnel stage) to the network, delivered ones to the host.
    #[allow(clippy::too_many_arguments)] // one frame's whole context
    fn after_outbound(
        &mut self,
        d: Disposition,
        link: LinkType,
        l2: &SavedHeader,
        buf: &mut PacketBuf,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) -> Outcome {
        let mut l2 = *l2;
        match d {
            Disposition::Forward => {
                if let Some(m) = self.mobility.as_mut() {
                    if let Err(reason) = m.handle_protected(&self.stage, buf, now) {
                        return Outcome::MobilityDrop(reason);
                    }
                }
                self.send_ip(Side::Network, link, &l2, buf, now, emit, tap)
            }
            Disposition::Deliver | Disposition::ToIke => {
                self.send_ip(Side::Host, link, &l2, buf, now, emit, tap)
            }
            Disposition::IcmpError => {
                // Back to the sender on the host side.
                l2.swap_macs();
                self.send_ip(Side::Host, link, &l2, buf, now, emit, tap);
            }
            Disposition::Fragmented(_) => {
                // The fragments land in a buffer kept for them (taken out
                // so send_ip may borrow the gateway; put back after).
                let mut frag = self.spare.take().unwrap_or_default();
                while self.stage.poll_transmit(&mut frag) {
                    if let Some(m) = self.mobility.as_mut() {
                        if m.handle_protected(&self.stage, &mut frag, now).is_err() {
                            continue;
                        }
                    }
                    self.send_ip(Side::Network, link, &l2, &mut frag, now, emit, &mut *tap);
                }
                self.spare = Some(frag);
            }
            Disposition::Held | Disposition::Drop(_) => {}
        }
        Outcome::Ipsec(d)
    }

    /// Puts the Ethernet header back (with the EtherType of the packet now
    /// in `buf`) and sends.
    #[allow(clippy::too_many_arguments)] // one frame's whole context
    fn send_ip(
        &mut self,
        to: Side,
        link: LinkType,
        l2: &SavedHeader,
        buf: &mut PacketBuf,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) {
        if to == Side::Network {
            tap.tap(TapPoint::AfterIpsec, now, LinkType::RawIp, buf.data());
        }
        if link == LinkType::Ethernet {
            if let Some(r) = self.routed.take() {
                self.send_routed(&r, to, buf, now, emit, tap);
                self.routed = Some(r);
                return;
            }
            self.last_l2[side_index(to)] = Some(*l2);
            let ethertype = ether::ethertype_for(buf.data()).unwrap_or(ether::ETHERTYPE_IPV4);
            match buf.prepend(l2.len()) {
                Ok(h) => l2.emit(h, ethertype),
                Err(_) => {
                    self.counters.record(PipelineDrop::SendFailed);
                    return;
                }
            }
        }
        self.send(to, link, buf.data(), now, emit, tap);
    }

    /// Routed mode: sends the IP packet in `buf` on `to` to its next hop,
    /// or holds it until the next hop is resolved (asking for it).
    fn send_routed(
        &mut self,
        r: &Routed,
        to: Side,
        buf: &mut PacketBuf,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) {
        let own = r.side(to);
        let Some(next_hop) = ip_dst(buf.data())
            .and_then(ip_addr)
            .and_then(|d| own.next_hop(d))
        else {
            self.counters.record(PipelineDrop::NoRoute);
            return;
        };
        let Some((mac, held, solicit)) = r.table(to).map(|mut t| {
            let mac = t.lookup(next_hop, now);
            let held = match mac {
                Some(_) => Ok(()),
                None => t.hold(next_hop, buf.data(), now),
            };
            (mac, held, t.solicit_due())
        }) else {
            self.counters.record(PipelineDrop::NeighborUnresolved);
            return;
        };
        if held.is_err() {
            self.counters.record(PipelineDrop::NeighborUnresolved);
        }
        if solicit {
            self.flush_solicitations(r, to, now, emit, tap);
        }
        if let Some(mac) = mac {
            self.send_to_mac(to, mac, own.mac, buf, now, emit, tap);
        }
    }

    /// Puts an Ethernet header from `src` to `dst` in front of the IP
    /// packet in `buf` and sends it.
    #[allow(clippy::too_many_arguments)] // one frame's whole context
    fn send_to_mac(
        &mut self,
        to: Side,
        dst: [u8; 6],
        src: [u8; 6],
        buf: &mut PacketBuf,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) {
        let ethertype = ether::ethertype_for(buf.data()).unwrap_or(ether::ETHERTYPE_IPV4);
        match buf.prepend(ether::HEADER_LEN) {
            Ok(h) => {
                h[..6].copy_from_slice(&dst);
                h[6..12].copy_from_slice(&src);
                h[12..14].copy_from_slice(&ethertype.to_be_bytes());
            }
            Err(_) => {
                self.counters.record(PipelineDrop::SendFailed);
                return;
            }
        }
        self.send(to, LinkType::Ethernet, buf.data(), now, emit, tap);
    }

    fn send(
        &mut self,
        to: Side,
        link: LinkType,
        frame: &[u8],
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) {
        match to {
            Side::Host => self.counters.host_tx.add(frame.len()),
            Side::Network => self.counters.net_tx.add(frame.len()),
        }
        let point = match to {
            Side::Host => TapPoint::Host,
            Side::Network => TapPoint::Wire,
        };
        tap.tap(point, now, link, frame);
        emit(to, frame);
    }
}

/// What a receive thread found walking a frame, handed to the worker with
/// it so nobody walks it again (see [`bitsgw_ipsec::walked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameWalk {
    /// Ethernet: the frame's layer 2 (tags and EtherType).
    pub layer2: Option<Layer2>,
    /// The IP packet behind it, and outbound its SPD decision.
    pub ip: Walked,
}

/// Whether an Ethernet frame starts with a VLAN tag.
fn is_tagged(frame: &[u8]) -> bool {
    matches!(
        ether::ethertype(frame),
        Some(ether::TPID_CTAG | ether::TPID_STAG)
    )
}

/// The destination address of an IP packet (by its version nibble).
fn ip_dst(pkt: &[u8]) -> Option<&[u8]> {
    match pkt.first()? >> 4 {
        4 => pkt.get(16..20),
        6 => pkt.get(24..40),
        _ => None,
    }
}

fn ip_addr(a: &[u8]) -> Option<IpAddr> {
    match a.len() {
        4 => <[u8; 4]>::try_from(a).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(a).ok().map(IpAddr::from),
        _ => None,
    }
}
