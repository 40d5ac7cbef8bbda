//! The outbound fast path: what the general path (RFC 4301 5.1) works out
//! per packet from an outbound SPD entry, resolved once per entry and kept
//! until the SAD or SPD changes.
//!
//! For each outbound SPD entry the stage keeps a [`FastOut`]: the SA that
//! protects the entry's traffic now and its [`Outer`] (outer IP header,
//! ESP-in-UDP header, SPI, transform sizes), stamped with the SAD's
//! generation when it was made. A packet whose SPD decision names the
//! entry then costs the stamp check, a few comparisons on the SA itself,
//! the headers copied from the `Outer`, the trailer and the AEAD.
//!
//! What keeps it right:
//! - Every change of the SA/SPI mapping (install, replace, remove, reload,
//!   a hard lifetime's removal, a retiring SA let go) moves the SAD's
//!   generation, and the table is rebuilt with the SPD
//!   ([`IpsecStage::set_spd`]): a stamp that differs sends the packet
//!   through the entry's resolution again, so no packet is sealed with a
//!   removed or replaced SA, and an entry whose SA is gone drops its
//!   packets with the general path's reason (never in clear).
//! - What can change on the SA itself is read from it per packet, not
//!   cached: its state (a sequence counter run out stops it), whether this
//!   stage holds its keys, its sequence counter against the last number
//!   (RFC 4303 3.3.3) and the lease's renewal point, and its lifetimes by
//!   [`crate::sa::Due`]: packet and byte counts are compared after each
//!   packet, exactly as the general path's check does, and time against
//!   the `now` the caller passes in (read once per batch by the pipeline).
//! - Anything else (a bundle, a packet that would exceed the MTU, a
//!   fragment in transport mode, an SA at a lifetime limit, out of
//!   sequence numbers or of its lease) takes the general path, which
//!   decides, counts and raises events as before.

use super::encap::Outer;
use super::outbound::last_sequence_number;
use super::*;

/// One outbound SPD entry's resolved protection.
#[derive(Debug, Clone, Copy)]
pub(super) struct FastOut {
    /// The SAD generation this was resolved at; `u64::MAX` before the
    /// first resolution.
    generation: u64,
    /// The SA and its encapsulation when the entry protects with one SA
    /// this stage owns; `None` sends the entry's packets the general way.
    route: Option<(SaId, Outer)>,
}

impl FastOut {
    /// Not yet resolved.
    pub(super) const UNRESOLVED: FastOut = FastOut {
        generation: u64::MAX,
        route: None,
    };
}

impl IpsecStage {
    /// Protects the packet in `buf` (walk `meta`), which matched outbound
    /// SPD entry `pos`, on the fast path; `None` when the general path
    /// must handle it (nothing was changed then).
    #[inline]
    pub(super) fn outbound_fast(
        &mut self,
        pos: usize,
        buf: &mut PacketBuf,
        meta: &IpMeta,
        now: Timestamp,
    ) -> Option<Disposition> {
        let generation = self.sad.generation();
        if self.fast_out.get(pos)?.generation != generation {
            self.resolve_fast_out(pos, generation);
        }
        let (id, outer) = self.fast_out.get(pos)?.route.as_ref()?;
        if outer.is_transport() && meta.frag.is_some() {
            return None;
        }
        if outer.output_len(buf.len(), meta.header_len) > self.cfg.mtu {
            return None;
        }
        let sa = self.sad.get_mut(*id)?;
        if sa.state == SaState::Stopped || now >= sa.due.at {
            return None;
        }
        let k = sa.keyed.as_mut()?;
        let seq = k.seq_out + 1;
        if k.seq_out >= last_sequence_number(sa.params.esn) || seq >= k.lease_renew_at {
            return None;
        }
        let ident = self.ident_v4;
        self.ident_v4 = ident.wrapping_add(1);
        let payload_len = match outer.encapsulate(&k.transform, buf, meta, seq, ident) {
            Ok(len) => len,
            Err(reason) => return Some(self.dropped(reason)),
        };
        k.seq_out = seq;
        sa.stats.packets += 1;
        sa.stats.bytes += payload_len as u64;
        if sa.stats.packets >= sa.due.packets || sa.stats.bytes >= sa.due.bytes {
            let id = *id;
            self.lifetime_check(id, now);
        }
        self.counters.outbound_protected += 1;
        #[cfg(test)]
        {
            self.fast_hits += 1;
        }
        Some(Disposition::Forward)
    }

    /// Resolves outbound SPD entry `pos` at SAD generation `generation`.
    #[cold]
    fn resolve_fast_out(&mut self, pos: usize, generation: u64) {
        let ttl = self.cfg.outer_ttl;
        let route = match self.spd_out.get(pos).map(|e| &e.action) {
            Some(Action::Protect(names)) if names.len() == 1 => self
                .sad
                .current(names[0])
                .and_then(|id| Some((id, self.sad.get(id)?)))
                .filter(|(_, sa)| sa.is_owned())
                .map(|(id, sa)| (id, Outer::of(sa, ttl))),
            _ => None,
        };
        if let Some(slot) = self.fast_out.get_mut(pos) {
            *slot = FastOut { generation, route };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::encap::{addr_bytes16, addr_bytes4};
    use super::*;
    use crate::crypto::TransformId;
    use crate::sa::{Limits, UdpEncap};
    use crate::selector::Selector;
    use bitsgw_wire::craft::ip_packet;
    use std::net::IpAddr;
    use zeroize::Zeroizing;

    const TUNNEL_V4: (&str, &str) = ("203.0.113.1", "203.0.113.2");
    const TUNNEL_V6: (&str, &str) = ("2001:db8:ffff::1", "2001:db8:ffff::2");

    fn addr(s: &str) -> crate::selector::Addr {
        s.parse::<IpAddr>().unwrap().into()
    }

    fn tunnel((local, remote): (&str, &str)) -> Mode {
        Mode::Tunnel {
            local: addr(local),
            remote: addr(remote),
        }
    }

    fn out_params(spi: u32, mode: Mode, udp_encap: Option<UdpEncap>) -> SaParams {
        SaParams {
            name: "out".into(),
            direction: Direction::Outbound,
            spi,
            mode,
            transform: TransformId::AesGcm128,
            backend: Default::default(),
            enc_key: Zeroizing::new((0..20).map(|i| i as u8 ^ spi as u8).collect()),
            auth_key: Zeroizing::new(Vec::new()),
            replay_window: 0,
            esn: false,
            soft: Limits::default(),
            hard: Limits::default(),
            udp_encap,
            destination: None,
            negotiated_keys: true,
        }
    }

    /// A stage whose one outbound SPD entry protects everything with SA
    /// "out" made of `params`.
    fn stage_with(params: SaParams, fast_path: bool) -> IpsecStage {
        let mut s = IpsecStage::new(StageConfig::default());
        s.fast_path = fast_path;
        let name = s.sa_name("out");
        s.set_spd(
            vec![SpdEntry {
                name: "all".into(),
                selector: Selector::ANY,
                action: Action::Protect(vec![name].into_boxed_slice()),
            }],
            Vec::new(),
        );
        s.install_sa(params, Timestamp::ZERO).unwrap();
        s
    }

    /// IPv4 or IPv6 UDP packets of several lengths (so every pad length
    /// occurs), IPv4 ones with TOS and DF set, which tunnel mode copies.
    fn inner_packets(v6: bool) -> Vec<Vec<u8>> {
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            (
                "2001:db8:1::1".parse().unwrap(),
                "2001:db8:2::1".parse().unwrap(),
            )
        } else {
            (
                "192.0.2.10".parse().unwrap(),
                "198.51.100.10".parse().unwrap(),
            )
        };
        (0..6usize)
            .map(|i| {
                let mut udp = vec![0u8; 8 + 13 * i + i % 4];
                udp[0..2].copy_from_slice(&4000u16.to_be_bytes());
                udp[2..4].copy_from_slice(&5000u16.to_be_bytes());
                let len = udp.len() as u16;
                udp[4..6].copy_from_slice(&len.to_be_bytes());
                let mut p = ip_packet(src, dst, proto::UDP, &udp, i % 2 == 0);
                if !v6 {
                    p[1] = 0xb8;
                    ip::ipv4_fill_checksum(&mut p);
                } else {
                    p[0] = 0x6b;
                    p[1] = 0x80;
                }
                p
            })
            .collect()
    }

    fn send(s: &mut IpsecStage, packet: &[u8]) -> (Disposition, Vec<u8>) {
        let mut b = PacketBuf::from_slice(packet);
        let d = s.handle_outbound(&mut b, Timestamp::ZERO);
        (d, b.data().to_vec())
    }

    fn spi_and_seq(outer: &[u8]) -> (u32, u32) {
        let meta = ip::parse(outer).unwrap();
        let at = meta.header_len
            + if meta.proto == proto::UDP {
                UDP_HEADER_LEN
            } else {
                0
            };
        let word = |o: usize| u32::from_be_bytes(outer[at + o..at + o + 4].try_into().unwrap());
        (word(0), word(4))
    }

    /// The outer header of tunnel-mode packet `out` sealed from `inner` is
    /// what the wire crate's emitters make of the same fields, with TOS /
    /// traffic class and DF copied from the inner header (RFC 4301
    /// 5.1.2.1), identification as sent and the checksum computed anew.
    fn assert_outer_header(
        out: &[u8],
        inner: &[u8],
        local: crate::selector::Addr,
        remote: crate::selector::Addr,
        udp: bool,
    ) {
        let next = if udp { proto::UDP } else { proto::ESP };
        let tos = ip::traffic_class(inner);
        let mut expected = [0u8; ip::IPV6_HEADER];
        match remote.family {
            Family::V4 => {
                let df = ip::version(inner) == Ok(IpVersion::V4) && inner[6] & 0x40 != 0;
                let total = u16::try_from(out.len()).unwrap();
                let ident = u16::from_be_bytes([out[4], out[5]]);
                let (src, dst) = (addr_bytes4(local), addr_bytes4(remote));
                ip::emit_ipv4_header(&mut expected, src, dst, next, total, 64, ident, tos, df);
                assert_eq!(out[..20], expected[..20]);
            }
            Family::V6 => {
                let plen = u16::try_from(out.len() - ip::IPV6_HEADER).unwrap();
                let (src, dst) = (addr_bytes16(local), addr_bytes16(remote));
                ip::emit_ipv6_header(&mut expected, src, dst, next, plen, 64, tos);
                assert_eq!(out[..40], expected[..]);
            }
        }
    }

    /// The fast path puts out exactly the general path's bytes: tunnel
    /// mode with an outer IPv4 and IPv6 header and transport mode, with
    /// and without ESP-in-UDP, for IPv4 and IPv6 packets; and it is the
    /// fast path that did (every packet after the entry's resolution).
    #[test]
    fn fast_path_puts_out_the_general_paths_bytes() {
        let encap = UdpEncap {
            local_port: 4500,
            remote_port: 45001,
        };
        for mode in [tunnel(TUNNEL_V4), tunnel(TUNNEL_V6), Mode::Transport] {
            for udp in [None, Some(encap)] {
                for v6 in [false, true] {
                    let params = out_params(0x1234, mode, udp);
                    let mut fast = stage_with(params.clone(), true);
                    let mut general = stage_with(params, false);
                    let packets = inner_packets(v6);
                    for p in &packets {
                        let (d, bytes) = send(&mut fast, p);
                        assert_eq!(d, Disposition::Forward, "{mode:?} {udp:?} v6 {v6}");
                        if let Mode::Tunnel { local, remote } = mode {
                            assert_outer_header(&bytes, p, local, remote, udp.is_some());
                        }
                        assert_eq!((d, bytes), send(&mut general, p), "{mode:?} {udp:?}");
                    }
                    assert_eq!(fast.fast_hits, packets.len() as u64);
                    assert_eq!(general.fast_hits, 0);
                    let id = fast.sad.by_name("out").unwrap();
                    let gid = general.sad.by_name("out").unwrap();
                    assert_eq!(
                        fast.sad.get(id).unwrap().stats,
                        general.sad.get(gid).unwrap().stats
                    );
                }
            }
        }
    }

    /// An SA replaced under its name (a rekey) protects the very next
    /// packet: new SPI, its own counter from 1.
    #[test]
    fn a_replaced_sa_seals_the_next_packet() {
        let mut s = stage_with(out_params(0x1000, tunnel(TUNNEL_V4), None), true);
        let p = &inner_packets(false)[0];
        for seq in 1..=3 {
            let (d, out) = send(&mut s, p);
            assert_eq!(d, Disposition::Forward);
            assert_eq!(spi_and_seq(&out), (0x1000, seq));
        }
        s.install_sa(out_params(0x2000, tunnel(TUNNEL_V4), None), Timestamp::ZERO)
            .unwrap();
        let (d, out) = send(&mut s, p);
        assert_eq!(d, Disposition::Forward);
        assert_eq!(spi_and_seq(&out), (0x2000, 1));
        assert_eq!(s.fast_hits, 4);
    }

    /// A removed SA seals nothing more: its entry's packets are dropped
    /// as `no_sa`, never sent in clear; a new SA under the name takes
    /// over again.
    #[test]
    fn a_removed_sa_drops_the_next_packet() {
        let mut s = stage_with(out_params(0x1000, tunnel(TUNNEL_V4), None), true);
        let p = &inner_packets(false)[1];
        assert_eq!(send(&mut s, p).0, Disposition::Forward);
        let id = s.sad.by_name("out").unwrap();
        s.remove_sa(id);
        for _ in 0..2 {
            assert_eq!(send(&mut s, p).0, Disposition::Drop(DropReason::NoSa));
        }
        assert_eq!(s.counters().drops(DropReason::NoSa), 2);
        s.install_sa(out_params(0x3000, tunnel(TUNNEL_V4), None), Timestamp::ZERO)
            .unwrap();
        let (d, out) = send(&mut s, p);
        assert_eq!(d, Disposition::Forward);
        assert_eq!(spi_and_seq(&out).0, 0x3000);
    }

    /// A new SPD takes effect at once: the cached entry of the old one is
    /// not used for a packet the new one discards.
    #[test]
    fn a_new_spd_replaces_the_resolved_entries() {
        let mut s = stage_with(out_params(0x1000, tunnel(TUNNEL_V4), None), true);
        let p = &inner_packets(false)[0];
        assert_eq!(send(&mut s, p).0, Disposition::Forward);
        s.set_spd(
            vec![SpdEntry {
                name: "all".into(),
                selector: Selector::ANY,
                action: Action::Discard,
            }],
            Vec::new(),
        );
        assert_eq!(
            send(&mut s, p).0,
            Disposition::Drop(DropReason::PolicyDiscard)
        );
    }

    /// Packet and byte lifetimes apply to the exact packet that reaches
    /// them, as on the general path: the soft limit raises its event once
    /// and traffic goes on; the hard limit removes the SA after the packet
    /// that reached it, and the next one is dropped.
    #[test]
    fn lifetimes_by_count_hold_on_the_fast_path() {
        let packet = &inner_packets(false)[2];
        let inner_len = packet.len() as u64;
        let limits = [
            (
                Limits {
                    packets: Some(2),
                    ..Limits::default()
                },
                Limits {
                    packets: Some(4),
                    ..Limits::default()
                },
            ),
            (
                Limits {
                    bytes: Some(2 * inner_len),
                    ..Limits::default()
                },
                Limits {
                    bytes: Some(3 * inner_len + 1),
                    ..Limits::default()
                },
            ),
        ];
        for (soft, hard) in limits {
            let mut runs = Vec::new();
            for fast_path in [true, false] {
                let mut params = out_params(0x1000, tunnel(TUNNEL_V4), None);
                params.soft = soft;
                params.hard = hard;
                let mut s = stage_with(params, fast_path);
                let mut seen = Vec::new();
                for _ in 0..6 {
                    let (d, _) = send(&mut s, packet);
                    let events: Vec<String> = std::iter::from_fn(|| s.poll_event())
                        .map(|e| match e {
                            Event::SoftExpired { .. } => "soft".to_string(),
                            Event::HardExpired { .. } => "hard".to_string(),
                            other => format!("{other:?}"),
                        })
                        .collect();
                    seen.push((d, events));
                }
                runs.push(seen);
            }
            let expected: Vec<(Disposition, Vec<&str>)> = vec![
                (Disposition::Forward, vec![]),
                (Disposition::Forward, vec!["soft"]),
                (Disposition::Forward, vec![]),
                (Disposition::Forward, vec!["hard"]),
                (Disposition::Drop(DropReason::NoSa), vec![]),
                (Disposition::Drop(DropReason::NoSa), vec![]),
            ];
            let expected: Vec<(Disposition, Vec<String>)> = expected
                .into_iter()
                .map(|(d, e)| (d, e.into_iter().map(String::from).collect()))
                .collect();
            assert_eq!(runs[0], expected, "{soft:?} {hard:?}");
            assert_eq!(runs[1], expected, "general path, {soft:?} {hard:?}");
        }
    }

    /// Time lifetimes are checked against the `now` the caller passes: at
    /// the hard limit the packet is dropped and the SA removed.
    #[test]
    fn a_hard_time_limit_drops_at_its_time() {
        let mut params = out_params(0x1000, tunnel(TUNNEL_V4), None);
        params.soft.seconds = Some(5);
        params.hard.seconds = Some(10);
        let mut s = stage_with(params, true);
        let p = &inner_packets(false)[0];
        let at = |secs| Timestamp::from_secs(secs);
        let mut b = PacketBuf::from_slice(p);
        assert_eq!(s.handle_outbound(&mut b, at(4)), Disposition::Forward);
        assert_eq!(s.poll_event(), None);
        let mut b = PacketBuf::from_slice(p);
        assert_eq!(s.handle_outbound(&mut b, at(5)), Disposition::Forward);
        assert!(matches!(s.poll_event(), Some(Event::SoftExpired { .. })));
        let mut b = PacketBuf::from_slice(p);
        assert_eq!(s.handle_outbound(&mut b, at(9)), Disposition::Forward);
        let mut b = PacketBuf::from_slice(p);
        assert_eq!(
            s.handle_outbound(&mut b, at(10)),
            Disposition::Drop(DropReason::NoSa)
        );
        assert!(matches!(s.poll_event(), Some(Event::HardExpired { .. })));
        assert!(s.sad.by_name("out").is_none());
        assert_eq!(s.fast_hits, 2);
    }

    /// The fast path never sends a cycled sequence number: the last one
    /// goes out, then the SA stops (RFC 4303 3.3.3).
    #[test]
    fn sequence_exhaustion_stops_the_sa() {
        let mut s = stage_with(out_params(0x1000, tunnel(TUNNEL_V4), None), true);
        let p = &inner_packets(false)[0];
        assert_eq!(send(&mut s, p).0, Disposition::Forward);
        let id = s.sad.by_name("out").unwrap();
        s.sad.get_mut(id).unwrap().keyed.as_mut().unwrap().seq_out = u64::from(u32::MAX) - 1;
        let (d, out) = send(&mut s, p);
        assert_eq!(d, Disposition::Forward);
        assert_eq!(spi_and_seq(&out).1, u32::MAX);
        assert_eq!(
            send(&mut s, p).0,
            Disposition::Drop(DropReason::SeqOverflow)
        );
        assert!(matches!(s.poll_event(), Some(Event::SeqOverflow { .. })));
        assert_eq!(send(&mut s, p).0, Disposition::Drop(DropReason::NoSa));
    }
}

/// The inbound side's per-SA memo of the last inner flow its selectors
/// passed: it never outlives the selectors.
#[cfg(test)]
pub(super) mod inbound_tests {
    use super::*;
    use crate::config::parse_policy;
    use bitsgw_wire::craft::udp_packet;
    use std::net::IpAddr;

    pub(in crate::stage) const KEY_AB: &str = "0x000102030405060708090a0b0c0d0e0f10111213";
    const KEY_BA: &str = "0x000102030405060708090a0b0c0d0e0f10111214";

    /// Gateway A (`a`) or B of a tunnel whose A-to-B SA is SPI 4096.
    pub(in crate::stage) fn gateway(a: bool) -> IpsecStage {
        let (me, peer) = ("203.0.113.1", "203.0.113.2");
        let (me, peer, spi_out, spi_in, key_out, key_in) = if a {
            (me, peer, 4096, 4097, KEY_AB, KEY_BA)
        } else {
            (peer, me, 4097, 4096, KEY_BA, KEY_AB)
        };
        let sa = |name: &str, dir: &str, spi: u32, key: &str, local: &str, remote: &str| {
            format!(
                r#"{{"name": "{name}", "direction": "{dir}", "spi": {spi}, "mode": "tunnel",
                 "tunnel": {{"local": "{local}", "remote": "{remote}"}},
                 "transform": "aes-gcm-128", "enc_key": "{key}"}}"#
            )
        };
        let text = format!(
            r#"{{"danger_static_keys_for_counter_mode": true,
              "spd": {{"outbound": [{{"name": "all", "action": "protect", "sa": "out"}}],
                      "inbound": [{{"name": "all", "action": "protect", "sa": "in"}}]}},
              "sad": [{}, {}]}}"#,
            sa("out", "outbound", spi_out, key_out, me, peer),
            sa("in", "inbound", spi_in, key_in, me, peer)
        );
        let set = parse_policy(&text, "t.json").unwrap();
        let mut s = IpsecStage::new(StageConfig::default());
        set.apply(&mut s, Timestamp::ZERO).unwrap();
        s
    }

    /// Gateway A seals, gateway B opens: after a flow has passed B's
    /// selectors, a new inbound SPD that no longer covers it makes its
    /// next packet fail the inner check (RFC 4301 5.2 step 4).
    #[test]
    fn a_new_spd_rechecks_a_flow_that_passed() {
        let (mut a, mut b) = (gateway(true), gateway(false));
        let src: IpAddr = "192.0.2.10".parse().unwrap();
        let dst: IpAddr = "198.51.100.10".parse().unwrap();
        let mut sealed = || {
            let mut buf = PacketBuf::from_slice(&udp_packet(src, dst, 4000, 5000, 32));
            assert_eq!(
                a.handle_outbound(&mut buf, Timestamp::ZERO),
                Disposition::Forward
            );
            buf
        };
        for _ in 0..2 {
            assert_eq!(
                b.handle_inbound(&mut sealed(), Timestamp::ZERO),
                Disposition::Deliver
            );
        }
        let name = b.sa_name("in");
        let mut elsewhere = crate::selector::Selector::ANY;
        elsewhere.proto = crate::selector::ProtoSel::Is(proto::TCP);
        let protect = |selector| SpdEntry {
            name: "tcp".into(),
            selector,
            action: Action::Protect(vec![name].into_boxed_slice()),
        };
        let outbound = b.spd(Direction::Outbound).entries().to_vec();
        b.set_spd(outbound, vec![protect(elsewhere)]);
        assert_eq!(
            b.handle_inbound(&mut sealed(), Timestamp::ZERO),
            Disposition::Drop(DropReason::InnerSelectorMismatch)
        );
    }
}
