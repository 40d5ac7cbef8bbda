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
//! [`LocalEndpoint`] per side is offered the side's frames first (see
//! [`crate::endpoint`] for which, on Ethernet and on raw-IP ports) and
//! answers what is for it.
//!
//! Routed on Ethernet ([`Gateway::set_routed`], [`crate::routed`]) the
//! appliance is the hosts' router and a host on the network: only IP
//! frames sent to its MAC are forwarded, each packet leaves from its MAC
//! to its next hop's, resolved by ARP or Neighbor Discovery
//! ([`crate::neighbor`]); ARP and other frames are never passed across.
//! Routed mode has no VLANs: tagged frames are dropped and counted as
//! [`PipelineDrop::Layer2`] under their outer tag's TPID.

mod burst;
mod local;
mod mobility;
mod routed;
#[cfg(test)]
mod tests;

pub use mobility::Mobility;

use crate::counters::{PipelineCounters, PipelineDrop};
use crate::endpoint::LocalEndpoint;
use crate::layer2::Layer2Policy;
use crate::routed::Routed;
use bitsgw_ipsec::walked::Walked;
use bitsgw_ipsec::{Disposition, Event, IpsecStage};
use bitsgw_mobility::counters::MobilityDrop;
use bitsgw_mobility::ha::Delivered;
use bitsgw_mobility::home_link::HomeLink;
use bitsgw_wire::ether::{self, Layer2, LinkType, SavedHeader};
use bitsgw_wire::{PacketBuf, Timestamp};

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

impl TapPoint {
    /// The tap point of the port on `side`.
    fn port(side: Side) -> TapPoint {
        match side {
            Side::Host => TapPoint::Host,
            Side::Network => TapPoint::Wire,
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
    /// The home agent on the home link (the host side): proxy Neighbor
    /// Discovery and ARP.
    home_link: Option<HomeLink>,
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
            home_link: None,
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
    /// [`crate::routed`]); clones of `routed` given to other workers learn
    /// what this one learns. Raw-IP ports are not affected.
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
    /// earlier one). Only frames of its link type are offered to it.
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
        self.home_link = Some(HomeLink::new(mac));
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

    /// Counts frames another queue handed to this gateway's (see
    /// [`PipelineCounters::handed_over`]).
    pub fn count_handed_over(&mut self, n: u64) {
        self.counters.handed_over += n;
    }

    /// Drives lifetimes, reassembly and mobility timers. What the timers
    /// make the endpoints or the mobility stage send is sent by
    /// [`Gateway::poll_endpoints`].
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.stage.handle_timeout(now);
        if let Some(m) = self.mobility.as_mut() {
            m.handle_timeout(now);
        }
        if let Some(r) = self.routed.as_mut() {
            let dropped = r.handle_timeout(now);
            self.counters
                .record_n(PipelineDrop::NeighborUnresolved, dropped);
        }
    }

    /// When `handle_timeout` next has work. (Endpoints have no timers of
    /// their own; `poll_endpoints` is called on every worker loop.)
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let m = self.mobility.as_ref().and_then(Mobility::poll_timeout);
        let n = self.routed.as_ref().and_then(Routed::poll_timeout);
        [self.stage.poll_timeout(), m, n]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sends what the endpoints want to send of their own accord (their
    /// timers, replies a shared endpoint queued while another worker
    /// handled the request), on their sides, of their link types.
    pub fn poll_endpoints(
        &mut self,
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
        tap: &mut dyn Tap,
    ) {
        let io = &mut Ports { now, emit, tap };
        for side in [Side::Host, Side::Network] {
            self.flush_endpoint(side, io);
            self.flush_neighbors(side, io);
        }
        self.flush_mobility(io);
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
        let io = &mut Ports { now, emit, tap };
        let o = self.dispatch(from, link, buf, walked, io);
        if self.mobility.is_some() {
            self.flush_mobility(io);
        }
        o
    }

    /// Where a frame goes: the home link's proxy, routed mode's layer 2,
    /// the appliance's endpoint, the layer-2 policy, then the mobility and
    /// IPsec stages.
    fn dispatch(
        &mut self,
        from: Side,
        link: LinkType,
        buf: &mut PacketBuf,
        walked: Option<&FrameWalk>,
        io: &mut Ports<'_>,
    ) -> Outcome {
        self.count_received(from, buf);
        io.tap.tap(TapPoint::port(from), io.now, link, buf.data());
        let mut l2 = SavedHeader::default();
        if from == Side::Host && link == LinkType::Ethernet && self.home_link_takes(buf.data(), io)
        {
            return Outcome::MobilityConsumed;
        }
        if link == LinkType::Ethernet && self.routed.is_some() {
            if let Some(o) = self.routed_receive(from, buf.data(), io) {
                return o;
            }
        } else if link == LinkType::Ethernet
            && self.endpoints[side_index(from)].is_some()
            && !is_tagged(buf.data())
        {
            // The appliance's own stack has no VLANs: tagged frames go the
            // IP path below.
            if let Some(o) = self.offer_local(from, link, buf.data(), io) {
                return o;
            }
        } else if link == LinkType::RawIp && self.endpoints[side_index(from)].is_some() {
            // Before the mobility stage: IKE to the appliance's own
            // address is never a tunnel's packet.
            if let Some(o) = self.offer_local(from, link, buf.data(), io) {
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
                self.send(to, link, buf.data(), io);
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
                if let Err(reason) = m.handle_network(&self.stage, buf, io.now) {
                    return Outcome::MobilityDrop(reason);
                }
            }
            io.tap
                .tap(TapPoint::AfterIpsec, io.now, LinkType::RawIp, buf.data());
        }
        // RFC 3776 4.2: at home the tunnel's SPD entries are inactive.
        let untunnelled = self
            .mobility
            .as_mut()
            .is_some_and(|m| m.untunnelled_at_home(&self.stage, from, buf.data()));
        let d = match from {
            Side::Host if untunnelled => Disposition::Forward,
            Side::Network if untunnelled => Disposition::Deliver,
            Side::Host => self.stage.handle_outbound_walked(buf, io.now, ip),
            Side::Network => self.stage.handle_inbound_walked(buf, io.now, ip),
        };
        if from == Side::Network && matches!(d, Disposition::Deliver) {
            if let Some(m) = self.mobility.as_mut() {
                match m.handle_delivered(buf, io.now) {
                    Delivered::ToHost => {}
                    Delivered::Consumed => return Outcome::MobilityConsumed,
                    Delivered::Drop(reason) => return Outcome::MobilityDrop(reason),
                }
            }
        }
        self.after_outbound(d, link, &l2, buf, io)
    }

    /// Sends what the IPsec stage produced: protected packets (through the
    /// mobility tunnel stage) to the network, delivered ones to the host.
    fn after_outbound(
        &mut self,
        d: Disposition,
        link: LinkType,
        l2: &SavedHeader,
        buf: &mut PacketBuf,
        io: &mut Ports<'_>,
    ) -> Outcome {
        let mut l2 = *l2;
        match d {
            Disposition::Forward => {
                if let Some(m) = self.mobility.as_mut() {
                    if let Err(reason) = m.handle_protected(&self.stage, buf, io.now) {
                        return Outcome::MobilityDrop(reason);
                    }
                }
                self.send_ip(Side::Network, link, &l2, buf, io)
            }
            Disposition::Deliver | Disposition::ToIke => {
                self.send_ip(Side::Host, link, &l2, buf, io)
            }
            Disposition::IcmpError => {
                // Back to the sender on the host side.
                l2.swap_macs();
                self.send_ip(Side::Host, link, &l2, buf, io);
            }
            Disposition::Fragmented(_) => {
                // The fragments land in a buffer kept for them (taken out
                // so send_ip may borrow the gateway; put back after).
                let mut frag = self.spare.take().unwrap_or_default();
                while self.stage.poll_transmit(&mut frag) {
                    if let Some(m) = self.mobility.as_mut() {
                        if m.handle_protected(&self.stage, &mut frag, io.now).is_err() {
                            continue;
                        }
                    }
                    self.send_ip(Side::Network, link, &l2, &mut frag, io);
                }
                self.spare = Some(frag);
            }
            Disposition::Held | Disposition::Drop(_) => {}
        }
        Outcome::Ipsec(d)
    }

    /// Puts the Ethernet header back (with the EtherType of the packet now
    /// in `buf`) and sends.
    fn send_ip(
        &mut self,
        to: Side,
        link: LinkType,
        l2: &SavedHeader,
        buf: &mut PacketBuf,
        io: &mut Ports<'_>,
    ) {
        if to == Side::Network {
            io.tap
                .tap(TapPoint::AfterIpsec, io.now, LinkType::RawIp, buf.data());
        }
        if link == LinkType::Ethernet {
            if self.send_routed(to, buf, io) {
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
        self.send(to, link, buf.data(), io);
    }

    /// Counts a frame received on `from`.
    fn count_received(&mut self, from: Side, frame: &PacketBuf) {
        match from {
            Side::Host => self.counters.host_rx.add(frame.len()),
            Side::Network => self.counters.net_rx.add(frame.len()),
        }
    }

    fn send(&mut self, to: Side, link: LinkType, frame: &[u8], io: &mut Ports<'_>) {
        transmit(&mut self.counters, to, link, frame, io);
    }
}

/// Sends `frame` on `to`: counted, shown to the tap of that side, emitted.
fn transmit(
    counters: &mut PipelineCounters,
    to: Side,
    link: LinkType,
    frame: &[u8],
    io: &mut Ports<'_>,
) {
    match to {
        Side::Host => counters.host_tx.add(frame.len()),
        Side::Network => counters.net_tx.add(frame.len()),
    }
    io.tap.tap(TapPoint::port(to), io.now, link, frame);
    (io.emit)(to, frame);
}

/// Where one call's frames go: its time, the ports' callback, the tap.
struct Ports<'a> {
    now: Timestamp,
    emit: &'a mut dyn FnMut(Side, &[u8]),
    tap: &'a mut dyn Tap,
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
