//! The mobility stage around the IPsec stage (the `ha` and `mn` roles),
//! and the home agent on the home link.

use super::{side_index, transmit, Gateway, Ports, Side};
use bitsgw_ipsec::IpsecStage;
use bitsgw_mobility::counters::{MobilityCounters, MobilityDrop};
use bitsgw_mobility::ha::{Delivered, HomeAgent};
use bitsgw_mobility::mn::MobileNode;
use bitsgw_wire::ether::LinkType;
use bitsgw_wire::{PacketBuf, Timestamp};

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
    pub(super) fn handle_network(
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

    pub(super) fn handle_protected(
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

    pub(super) fn untunnelled_at_home(
        &mut self,
        stage: &IpsecStage,
        from: Side,
        pkt: &[u8],
    ) -> bool {
        let received = from == Side::Network;
        match self {
            Mobility::HomeAgent(ha) => ha.untunnelled_at_home(&stage.query(), received, pkt),
            Mobility::MobileNode(mn) => mn.untunnelled_at_home(&stage.query(), received, pkt),
        }
    }

    pub(super) fn handle_delivered(&mut self, buf: &PacketBuf, now: Timestamp) -> Delivered {
        match self {
            Mobility::HomeAgent(ha) => ha.handle_delivered(buf, now),
            Mobility::MobileNode(mn) => mn.handle_delivered(buf, now),
        }
    }

    pub(super) fn poll_transmit(&mut self, buf: &mut PacketBuf) -> bool {
        match self {
            Mobility::HomeAgent(ha) => ha.poll_transmit(buf),
            Mobility::MobileNode(mn) => mn.poll_transmit(buf),
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Timestamp) {
        match self {
            Mobility::HomeAgent(ha) => ha.handle_timeout(now),
            Mobility::MobileNode(mn) => mn.handle_timeout(now),
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
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

impl Gateway {
    /// Sends what the mobility protocol module originated (BU, BA, BE,
    /// prefix discovery) through the IPsec stage and the tunnel stage, as
    /// host traffic goes.
    pub(super) fn flush_mobility(&mut self, io: &mut Ports<'_>) {
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
            let d = self.stage.handle_outbound(&mut buf, io.now);
            let l2 = l2.unwrap_or_default();
            let _ = self.after_outbound(d, link, &l2, &mut buf, io);
        }
        self.spare = Some(buf);
        self.announce_away(io);
    }

    /// A frame from the host side, on Ethernet: whether the home agent
    /// took it on the home link (an ARP request or a Neighbor Solicitation
    /// for the home address of a node away, answered).
    pub(super) fn home_link_takes(&mut self, frame: &[u8], io: &mut Ports<'_>) -> bool {
        let (Some(home_link), Some(Mobility::HomeAgent(ha))) =
            (self.home_link, self.mobility.as_mut())
        else {
            return false;
        };
        let counters = &mut self.counters;
        home_link.handle_frame(ha, frame, &mut |answer| {
            transmit(counters, Side::Host, LinkType::Ethernet, answer, io);
        })
    }

    /// RFC 6275 10.4.1: the home agent's announcements on the home link
    /// for the nodes newly away.
    fn announce_away(&mut self, io: &mut Ports<'_>) {
        let (Some(home_link), Some(Mobility::HomeAgent(ha))) =
            (self.home_link, self.mobility.as_mut())
        else {
            return;
        };
        let counters = &mut self.counters;
        home_link.poll_transmit(ha, &mut |frame| {
            transmit(counters, Side::Host, LinkType::Ethernet, frame, io);
        });
    }
}
