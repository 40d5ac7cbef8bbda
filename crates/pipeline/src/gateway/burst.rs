//! A receive call's frames through the gateway together: the IP frames
//! that go straight to the IPsec stage pass it as one burst
//! ([`IpsecStage::handle_outbound_burst`], `handle_inbound_burst`), so what
//! consecutive packets share is worked out once.
//!
//! Only where nothing but the stage stands between the ports: no mobility
//! stage, no home link, and on Ethernet no routed mode and no endpoint of
//! the appliance's own on the receiving side; and only without a trace tap
//! (the caller's choice), whose copies would otherwise come in another
//! order. A frame that is not a plain IP frame (ARP, other EtherTypes, a
//! frame too short for its header) ends the burst before it and is handled
//! alone by [`Gateway::handle_frame_walked`], so frames leave in the order
//! they would one at a time, and each frame's outcome and counters are
//! those of that path.
//!
//! [`IpsecStage::handle_outbound_burst`]: bitsgw_ipsec::IpsecStage::handle_outbound_burst

use super::*;

/// Most frames in one burst through the stage (the runner's batch).
const BURST: usize = 32;

impl Gateway {
    /// Handles frames that arrived from `from` together, as
    /// [`Gateway::handle_frame_walked`] would one after the other with
    /// `walks[i]` the walk of `frames[i]` and no tap.
    pub fn handle_frames_walked(
        &mut self,
        from: Side,
        link: LinkType,
        frames: &mut [PacketBuf],
        walks: &[Option<FrameWalk>],
        now: Timestamp,
        emit: &mut dyn FnMut(Side, &[u8]),
    ) {
        let walk = |i: usize| walks.get(i).and_then(Option::as_ref);
        if !self.bursts_apply(from, link) {
            for (i, buf) in frames.iter_mut().enumerate() {
                let _ = self.handle_frame_walked(from, link, buf, walk(i), now, emit, &mut NoTap);
            }
            return;
        }
        let io = &mut Ports {
            now,
            emit,
            tap: &mut NoTap,
        };
        let mut l2 = [SavedHeader::default(); BURST];
        let mut dispositions = [Disposition::Held; BURST];
        let mut next = 0;
        while next < frames.len() {
            // The plain IP frames from `next` on, their layer 2 saved and
            // taken off.
            let start = next;
            while next < frames.len() && next - start < BURST {
                let Some(saved) = self.plain_ip(link, &frames[next], walk(next)) else {
                    break;
                };
                self.count_received(from, &frames[next]);
                let _ = frames[next].trim_front(saved.map_or(0, |s| s.len()));
                l2[next - start] = saved.unwrap_or_default();
                next += 1;
            }
            let mut done = start;
            while done < next {
                let burst = &mut frames[done..next];
                let ds = &mut dispositions[..burst.len()];
                let walked = |i: usize| walk(done + i).map(|w| &w.ip);
                let n = match from {
                    Side::Host => self.stage.handle_outbound_burst(burst, walked, now, ds),
                    Side::Network => self.stage.handle_inbound_burst(burst, walked, now, ds),
                };
                for (i, d) in dispositions[..n].iter().enumerate() {
                    let at = done + i;
                    let _ = self.after_outbound(*d, link, &l2[at - start], &mut frames[at], io);
                }
                done += n.max(1);
            }
            if next < frames.len() && next == start {
                let _ = self.dispatch(from, link, &mut frames[next], walk(next), io);
                next += 1;
            }
        }
    }

    /// Whether frames from `from` on `link` meet nothing but the IPsec
    /// stage (see the module's text).
    fn bursts_apply(&self, from: Side, link: LinkType) -> bool {
        self.mobility.is_none()
            && self.home_link.is_none()
            && (link == LinkType::RawIp
                || (self.routed.is_none() && self.endpoints[side_index(from)].is_none()))
    }

    /// A frame [`Gateway::dispatch`] would hand to the IPsec stage at once:
    /// its Ethernet header to put back (`None` on a raw-IP port), or `None`
    /// for a frame to handle alone.
    fn plain_ip(
        &self,
        link: LinkType,
        frame: &PacketBuf,
        walked: Option<&FrameWalk>,
    ) -> Option<Option<SavedHeader>> {
        if link != LinkType::Ethernet {
            return Some(None);
        }
        let layer2 = walked
            .and_then(|w| w.layer2)
            .or_else(|| Layer2::parse(frame.data()))
            .filter(Layer2::is_ip)?;
        SavedHeader::copy_from(frame.data(), &layer2).map(Some)
    }
}
