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

#[cfg(test)]
mod tests {
    use super::*;
    use bitsgw_ipsec::config::parse_policy;
    use bitsgw_ipsec::walked::Walked;
    use bitsgw_ipsec::StageConfig;
    use bitsgw_wire::craft::{ip_packet, udp_packet};
    use bitsgw_wire::ip;
    use std::net::IpAddr;

    fn gateway(site: &str) -> Gateway {
        let text = match site {
            "a" => include_str!("../../../../policies/site-to-site-a.json"),
            _ => include_str!("../../../../policies/site-to-site-b.json"),
        };
        let set = parse_policy(text, "site-to-site.json").unwrap();
        let mut stage = IpsecStage::new(StageConfig::default());
        set.apply(&mut stage, Timestamp::ZERO).unwrap();
        Gateway::new(stage)
    }

    fn ip4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// What the receive thread hands over with `frame`.
    fn walk(frame: &[u8]) -> Option<FrameWalk> {
        let layer2 = Layer2::parse(frame)?;
        let meta = ip::parse(frame.get(layer2.header_len..)?).ok()?;
        Some(FrameWalk {
            layer2: Some(layer2),
            ip: Walked { meta, spd: None },
        })
    }

    /// Frames site A's host side sends (`host`) or its network side
    /// receives, by `i`: protected traffic, some of it too big (DF: an
    /// ICMP error; without: fragments), traffic the SPD discards, ARP
    /// (passed), LLDP (dropped), a VLAN-tagged packet, a frame cut short,
    /// and on the network side site B's ESP and a replay of it.
    fn frame(i: usize, host: bool, b: &mut Gateway, sent: &mut Vec<Vec<u8>>) -> Vec<u8> {
        let protected = |len| udp_packet(ip4("192.0.2.10"), ip4("198.51.100.20"), 1000, 2000, len);
        match i % 9 {
            0 | 1 if host => eth(0x0800, &protected(64 + i % 50)),
            0 | 1 => {
                // Site B seals a packet for site A.
                let p = udp_packet(ip4("198.51.100.20"), ip4("192.0.2.10"), 2000, 1000, 64);
                let mut buf = PacketBuf::from_slice(&eth(0x0800, &p));
                let mut out = Vec::new();
                let _ = b.handle_frame(
                    Side::Host,
                    LinkType::Ethernet,
                    &mut buf,
                    Timestamp::ZERO,
                    &mut |_, f| out.push(f.to_vec()),
                    &mut NoTap,
                );
                sent.extend(out.iter().cloned());
                out.pop().unwrap_or_default()
            }
            2 if !host && !sent.is_empty() => sent[i % sent.len()].clone(),
            2 => {
                let mut p = protected(1452);
                if i.is_multiple_of(2) {
                    p[6] = 0;
                    ip::ipv4_fill_checksum(&mut p);
                }
                eth(0x0800, &p)
            }
            3 => eth(
                0x0800,
                &ip_packet(ip4("203.0.113.9"), ip4("203.0.113.10"), 17, &[0; 12], true),
            ),
            4 => eth(0x0806, &[0; 28]),
            5 => eth(0x88cc, &[0; 30]),
            6 => {
                let mut f = eth(0x8100, &[0, 5]);
                f.extend_from_slice(&0x0800u16.to_be_bytes());
                f.extend_from_slice(&protected(40));
                f
            }
            7 => vec![2, 0, 0],
            _ => eth(0x0800, &protected(20)),
        }
    }

    /// Frames through a gateway in batches of every length from 1 to 40
    /// leave, in order, exactly as one at a time, with the same outcomes
    /// counted alike, both ways, with and without the receive thread's
    /// walks.
    #[test]
    fn batches_leave_as_frames_one_at_a_time() {
        for host in [true, false] {
            for walked in [false, true] {
                let mut b = gateway("b");
                let mut sent = Vec::new();
                let frames: Vec<Vec<u8>> = (0..400)
                    .map(|i| frame(i * 7 + i / 9, host, &mut b, &mut sent))
                    .collect();
                let walks: Vec<Option<FrameWalk>> = frames
                    .iter()
                    .map(|f| if walked { walk(f) } else { None })
                    .collect();
                let from = if host { Side::Host } else { Side::Network };
                let (mut single, mut batched) = (gateway("a"), gateway("a"));
                let mut expected = Vec::new();
                for (f, w) in frames.iter().zip(&walks) {
                    let mut buf = PacketBuf::from_slice(f);
                    let _ = single.handle_frame_walked(
                        from,
                        LinkType::Ethernet,
                        &mut buf,
                        w.as_ref(),
                        Timestamp::ZERO,
                        &mut |side, f| expected.push((side, f.to_vec())),
                        &mut NoTap,
                    );
                }
                let mut got = Vec::new();
                let (mut next, mut len) = (0, 1);
                while next < frames.len() {
                    let end = (next + len).min(frames.len());
                    let mut bufs: Vec<PacketBuf> = frames[next..end]
                        .iter()
                        .map(|f| PacketBuf::from_slice(f))
                        .collect();
                    batched.handle_frames_walked(
                        from,
                        LinkType::Ethernet,
                        &mut bufs,
                        &walks[next..end],
                        Timestamp::ZERO,
                        &mut |side, f| got.push((side, f.to_vec())),
                    );
                    next = end;
                    len = len % 40 + 1;
                }
                assert!(expected.len() > 100, "{}", expected.len());
                assert_eq!(expected, got, "host {host} walked {walked}");
                assert_eq!(single.counters(), batched.counters());
                assert_eq!(
                    format!("{:?}", single.stage().counters()),
                    format!("{:?}", batched.stage().counters())
                );
            }
        }
    }
}
