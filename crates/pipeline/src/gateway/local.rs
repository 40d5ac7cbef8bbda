//! The appliance's own endpoints on the gateway's ports (see
//! [`crate::endpoint`]).

use super::{side_index, Gateway, Outcome, Ports, Side};
use crate::counters::PipelineDrop;
use crate::endpoint::{network_kind, NetworkKind};
use bitsgw_ipsec::Disposition;
use bitsgw_wire::ether::LinkType;

impl Gateway {
    /// Sends what the endpoint of `side` has to send.
    pub(super) fn flush_endpoint(&mut self, side: Side, io: &mut Ports<'_>) {
        let Some(mut ep) = self.endpoints[side_index(side)].take() else {
            return;
        };
        let link = ep.link();
        ep.poll_transmit(io.now, &mut |frame| {
            self.send(side, link, frame, io);
        });
        self.endpoints[side_index(side)] = Some(ep);
    }

    /// Offers a frame of `link` from `from` to that side's endpoint, if
    /// it is of that link type. `Some` if the frame stops here (consumed
    /// or refused).
    pub(super) fn offer_local(
        &mut self,
        from: Side,
        link: LinkType,
        frame: &[u8],
        io: &mut Ports<'_>,
    ) -> Option<Outcome> {
        let ep = self.endpoints[side_index(from)]
            .as_mut()
            .filter(|ep| ep.link() == link)?;
        if from == Side::Network {
            match network_kind(link, frame) {
                NetworkKind::Ike if ep.takes_ike() => {}
                // Raw IP: IKE alone (see `crate::endpoint`).
                _ if link == LinkType::RawIp => return None,
                NetworkKind::Offer => {}
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
        if !ep.handle_frame(frame, io.now) {
            return None;
        }
        self.counters.local_delivered += 1;
        self.flush_endpoint(from, io);
        Some(Outcome::Ipsec(Disposition::Deliver))
    }
}
