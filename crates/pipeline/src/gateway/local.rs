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
        ep.poll_transmit(io.now, &mut |frame| {
            self.send(side, LinkType::Ethernet, frame, io);
        });
        self.endpoints[side_index(side)] = Some(ep);
    }

    /// Offers an Ethernet frame from `from` to that side's endpoint.
    /// `Some` if the frame stops here (consumed or refused).
    pub(super) fn offer_local(
        &mut self,
        from: Side,
        frame: &[u8],
        io: &mut Ports<'_>,
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
        if !ep.handle_frame(frame, io.now) {
            return None;
        }
        self.counters.local_delivered += 1;
        self.flush_endpoint(from, io);
        Some(Outcome::Ipsec(Disposition::Deliver))
    }
}
