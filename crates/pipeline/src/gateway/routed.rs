//! Routed mode on the gateway's Ethernet ports: what reaches the IPsec
//! stage and what leaves through [`crate::routed::Routed`].

use super::{is_tagged, side_index, transmit, Gateway, Outcome, Ports, Side};
use crate::counters::{PipelineCounters, PipelineDrop};
use crate::routed::{ip_dst, LinkOut};
use bitsgw_wire::ether::{self, LinkType};
use bitsgw_wire::PacketBuf;

impl Gateway {
    /// Routed mode: sends the solicitations and the released packets of
    /// `side`.
    pub(super) fn flush_neighbors(&mut self, side: Side, io: &mut Ports<'_>) {
        if let Some(r) = self.routed.as_mut() {
            let now = io.now;
            r.poll_transmit(
                side,
                now,
                &mut Transmit {
                    counters: &mut self.counters,
                    io,
                },
            );
        }
    }

    /// Routed mode: what a frame that arrived on `from` teaches the
    /// neighbor table, and whether it stops here: `Some` if it was for the
    /// appliance's endpoint or is not to be forwarded (not IP, to a group
    /// address, to another station's MAC); `None` if it is an IP packet
    /// for the IPsec stage.
    pub(super) fn routed_receive(
        &mut self,
        from: Side,
        frame: &[u8],
        io: &mut Ports<'_>,
    ) -> Option<Outcome> {
        let r = self.routed.as_mut()?;
        let now = io.now;
        r.learn_from(
            from,
            frame,
            now,
            &mut Transmit {
                counters: &mut self.counters,
                io,
            },
        );
        let own = r.side(from);
        // A short frame: the inline path counts it.
        let ethertype = ether::ethertype(frame)?;
        if is_tagged(frame) {
            return Some(self.drop_layer2(ethertype));
        }
        let is_ip = ethertype == ether::ETHERTYPE_IPV4 || ethertype == ether::ETHERTYPE_IPV6;
        let group = frame[0] & 1 == 1;
        let to_me = frame[..6] == own.mac;
        let pkt = &frame[ether::HEADER_LEN..];
        let for_own_address = is_ip && ip_dst(pkt).is_some_and(|d| own.is_own_addr(d));
        if (!is_ip || group || for_own_address) && self.endpoints[side_index(from)].is_some() {
            if let Some(o) = self.offer_local(from, LinkType::Ethernet, frame, io) {
                return Some(o);
            }
        }
        if !is_ip || group || !to_me {
            self.counters.record(PipelineDrop::NotRouted);
            return Some(Outcome::PipelineDrop(PipelineDrop::NotRouted));
        }
        None
    }

    /// Routed mode: sends the IP packet in `buf` on `to` to its next hop
    /// (see [`crate::routed::Routed::send`]). False if not routed.
    pub(super) fn send_routed(
        &mut self,
        to: Side,
        buf: &mut PacketBuf,
        io: &mut Ports<'_>,
    ) -> bool {
        let Some(r) = self.routed.as_mut() else {
            return false;
        };
        let now = io.now;
        r.send(
            to,
            buf,
            now,
            &mut Transmit {
                counters: &mut self.counters,
                io,
            },
        );
        true
    }
}

/// Where routed mode's layer 2 sends: through [`transmit`], drops counted.
struct Transmit<'a, 'p> {
    counters: &'a mut PipelineCounters,
    io: &'a mut Ports<'p>,
}

impl LinkOut for Transmit<'_, '_> {
    fn send_frame(&mut self, side: Side, frame: &[u8]) {
        transmit(self.counters, side, LinkType::Ethernet, frame, self.io);
    }

    fn drop_packets(&mut self, reason: PipelineDrop, n: u64) {
        self.counters.record_n(reason, n);
    }
}
