//! The inbound fast path per SPI: the outermost ESP layer of a packet,
//! opened with its SA without what the general path
//! (RFC 4301 5.2, RFC 4303 3.4) works out anew for every packet.
//!
//! The SA comes from the SPI (in a burst, the previous packet's lookup
//! when it named the same SPI at the same SAD generation, see
//! [`super::burst`]). The fast path takes the packet when the SA is in
//! tunnel mode, held by this stage, not stopped, below every lifetime
//! limit ([`crate::sa::Due`]: three comparisons, time against the `now`
//! the caller read once for its batch), and has no predecessor still
//! retiring (the first packets after a
//! rekey confirm the new SA on the general path). It then checks the
//! packet's destination against the SA's (RFC 4301 4.1), verifies the ICV,
//! checks the anti-replay window and the padding, decrypts in place
//! ([`super::inbound::open_esp`], the same code as the general path's),
//! counts the SA's packets and bytes and compares them with the next
//! limit (the general path's second lifetime check) and takes the outer
//! headers off ([`super::inbound::strip_tunnel`]).
//!
//! Every check fails closed with the general path's reason and counters.
//! The inner packet then goes on exactly as on the general path: another
//! ESP layer of a known SPI (a bundle) is opened there, and the innermost
//! packet is checked against the SA's selectors (RFC 4301 5.2 step 4),
//! whose answer for the SA's last flow is kept until they change.
//! Fragments are reassembled by the general path first (the datagram they
//! make may then take the fast path); transport mode and anything else
//! listed above take the general path from the start.

use super::inbound::{open_esp, strip_tunnel};
use super::*;

/// What the inbound fast path made of a packet.
pub(super) enum FastIn {
    /// Opened: the buffer holds the inner packet, walked here.
    Opened(IpMeta),
    /// Dropped for this reason (not yet counted).
    Dropped(DropReason),
    /// Not for the fast path; the packet is untouched.
    General,
}

impl IpsecStage {
    /// Opens the ESP packet at `off` in `buf` with inbound SA `id` on the
    /// fast path (see the module's text).
    #[inline]
    pub(super) fn inbound_fast(
        &mut self,
        id: SaId,
        buf: &mut PacketBuf,
        meta: &IpMeta,
        off: usize,
        now: Timestamp,
    ) -> FastIn {
        if self.sad.has_retiring(id) {
            return FastIn::General;
        }
        let Some(sa) = self.sad.get_mut(id) else {
            return FastIn::General;
        };
        if sa.state == SaState::Stopped
            || sa.limit_due(now)
            || !matches!(sa.params.mode, Mode::Tunnel { .. })
        {
            return FastIn::General;
        }
        if let Some(destination) = sa.params.destination {
            if addresses(buf.data(), meta).1 != destination {
                return FastIn::Dropped(DropReason::WrongDestination);
            }
        }
        let esn = sa.params.esn;
        let Some(k) = sa.keyed.as_mut() else {
            return FastIn::General;
        };
        #[cfg(test)]
        {
            self.fast_in_hits += 1;
        }
        let opened = match open_esp(k, esn, buf, off) {
            Ok(o) => o,
            Err(reason) => return FastIn::Dropped(reason),
        };
        // The lifetimes after the packet: the caller's, once it is through.
        sa.stats.packets += 1;
        sa.stats.bytes += opened.payload_len as u64;
        if opened.next_header == proto::NO_NEXT_HEADER {
            return FastIn::Dropped(DropReason::DummyPacket);
        }
        if buf.trim_back(opened.trailer_len).is_err() {
            return FastIn::Dropped(DropReason::EspTruncated);
        }
        match strip_tunnel(buf, off, &opened) {
            Ok(inner) => FastIn::Opened(inner),
            Err(reason) => FastIn::Dropped(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fast::inbound_tests::{gateway, KEY_AB};
    use super::*;
    use crate::crypto::{GcmBackend, Transform, TransformId};
    use bitsgw_wire::craft::{ip_packet, udp_packet};
    use std::net::IpAddr;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// What gateway A sends for a UDP packet of `len` payload bytes.
    fn sealed(a: &mut IpsecStage, len: usize) -> Vec<u8> {
        let p = udp_packet(v4("192.0.2.10"), v4("198.51.100.10"), 4000, 5000, len);
        let mut b = PacketBuf::from_slice(&p);
        assert_eq!(
            a.handle_outbound(&mut b, Timestamp::ZERO),
            Disposition::Forward
        );
        b.data().to_vec()
    }

    fn open(b: &mut IpsecStage, packet: &[u8]) -> (Disposition, Vec<u8>) {
        let mut buf = PacketBuf::from_slice(packet);
        let d = b.handle_inbound(&mut buf, Timestamp::ZERO);
        (d, buf.data().to_vec())
    }

    fn in_stats(b: &IpsecStage) -> crate::sa::SaStats {
        b.sad.get(b.sad.by_name("in").unwrap()).unwrap().stats
    }

    /// An ESP packet of A's SA 4096 with sequence number `seq` around
    /// `payload`, then `pad`, the pad length byte `pad_len` and
    /// `next_header`, sealed with A's key: what A itself never sends.
    fn crafted(seq: u32, payload: &[u8], pad: &[u8], pad_len: u8, next_header: u8) -> Vec<u8> {
        let key: Vec<u8> = (0..20)
            .map(|i| u8::from_str_radix(&KEY_AB[2 + 2 * i..4 + 2 * i], 16).unwrap())
            .collect();
        let t = Transform::new(TransformId::AesGcm128, GcmBackend::default(), &key, &[]).unwrap();
        let mut esp = Vec::new();
        esp.extend_from_slice(&4096u32.to_be_bytes());
        esp.extend_from_slice(&seq.to_be_bytes());
        esp.extend_from_slice(&[0; 8]);
        esp.extend_from_slice(payload);
        esp.extend_from_slice(pad);
        esp.extend_from_slice(&[pad_len, next_header]);
        esp.extend_from_slice(&[0; 16]);
        t.seal(&mut esp, u64::from(seq), false).unwrap();
        ip_packet(
            v4("203.0.113.1"),
            v4("203.0.113.2"),
            proto::ESP,
            &esp,
            false,
        )
    }

    fn inner() -> Vec<u8> {
        udp_packet(v4("192.0.2.10"), v4("198.51.100.10"), 4000, 5000, 21)
    }

    /// The fast path delivers exactly what the general path delivers,
    /// counts the same, and is what opened every packet.
    #[test]
    fn the_fast_path_opens_what_the_general_path_opens() {
        let mut a = gateway(true);
        let (mut fast, mut general) = (gateway(false), gateway(false));
        general.fast_path = false;
        let packets: Vec<Vec<u8>> = (0..12).map(|i| sealed(&mut a, 13 * i + i % 5)).collect();
        // A packet crafted alike is opened alike (the crafting is right).
        let mut packets = packets;
        packets.push(crafted(50, &inner(), &[1, 2, 3], 3, proto::IPV4));
        for p in &packets {
            let got = open(&mut fast, p);
            assert_eq!(got.0, Disposition::Deliver);
            assert_eq!(got, open(&mut general, p));
        }
        assert_eq!(fast.fast_in_hits, packets.len() as u64);
        assert_eq!(general.fast_in_hits, 0);
        assert_eq!(in_stats(&fast), in_stats(&general));
        assert_eq!(
            format!("{:?}", fast.counters()),
            format!("{:?}", general.counters())
        );
    }

    /// Every check of RFC 4303 3.4 still drops on the fast path, with its
    /// reason and the SA's counter: a flipped ICV byte, a replay, one too
    /// old for the window, ESP cut short, bad padding, a pad length past
    /// the payload, a dummy packet (RFC 4303 2.6), an inner packet that is
    /// not what the next header says.
    #[test]
    fn each_check_drops_with_its_reason_on_the_fast_path() {
        let mut a = gateway(true);
        let mut b = gateway(false);
        let first = sealed(&mut a, 40);
        assert_eq!(open(&mut b, &first).0, Disposition::Deliver);
        let mut flipped = sealed(&mut a, 40);
        let last = flipped.len() - 1;
        flipped[last] ^= 0x80;
        let mut cut = sealed(&mut a, 40);
        cut.truncate(20 + 8 + 8 + 4);
        ip::set_total_len(&mut cut, 40);
        ip::ipv4_fill_checksum(&mut cut);
        let cases = [
            (flipped, DropReason::IcvFailure),
            (first.clone(), DropReason::ReplayDuplicate),
            (cut, DropReason::EspTruncated),
            (
                crafted(100, &inner(), &[1, 2, 9], 3, proto::IPV4),
                DropReason::BadPadding,
            ),
            (
                crafted(101, &inner()[..4], &[], 200, proto::IPV4),
                DropReason::BadPadLength,
            ),
            (
                crafted(102, &inner(), &[], 0, proto::NO_NEXT_HEADER),
                DropReason::DummyPacket,
            ),
            (
                crafted(103, &inner(), &[], 0, proto::IPV6),
                DropReason::BadInnerPacket,
            ),
        ];
        for (packet, reason) in &cases {
            let hits = b.fast_in_hits;
            let drops = b.counters().drops(*reason);
            assert_eq!(open(&mut b, packet).0, Disposition::Drop(*reason));
            assert_eq!(b.fast_in_hits, hits + 1, "{reason:?}: not the fast path");
            assert_eq!(b.counters().drops(*reason), drops + 1);
        }
        let stats = in_stats(&b);
        // BadPadding, BadPadLength, BadInnerPacket and EspTruncated count
        // as the SA's other drops; a dummy packet as none.
        assert_eq!(
            (stats.icv_failures, stats.replay_drops, stats.other_drops),
            (1, 1, 4)
        );
        // Too old: the crafted packets moved the window to 103, past 64
        // numbers above the first packet's.
        let hits = b.fast_in_hits;
        assert_eq!(
            open(&mut b, &first).0,
            Disposition::Drop(DropReason::ReplayTooOld)
        );
        assert_eq!(b.fast_in_hits, hits + 1);
    }

    /// The inner packet the fast path opened is checked against the SA's
    /// selectors (RFC 4301 5.2 step 4): an inbound SPD that takes only UDP
    /// refuses TCP that came out of the SA, and the SA's memo of a flow
    /// that passed does not outlive the selectors.
    #[test]
    fn the_inner_packet_is_checked_against_the_selectors() {
        let (mut a, mut b) = (gateway(true), gateway(false));
        let tcp = ip_packet(
            v4("192.0.2.10"),
            v4("198.51.100.10"),
            proto::TCP,
            &[0; 20],
            true,
        );
        let seal = |a: &mut IpsecStage| {
            let mut buf = PacketBuf::from_slice(&tcp);
            assert_eq!(
                a.handle_outbound(&mut buf, Timestamp::ZERO),
                Disposition::Forward
            );
            buf.data().to_vec()
        };
        assert_eq!(open(&mut b, &seal(&mut a)).0, Disposition::Deliver);
        let name = b.sa_name("in");
        let mut udp_only = crate::selector::Selector::ANY;
        udp_only.proto = crate::selector::ProtoSel::Is(proto::UDP);
        let outbound = b.spd(Direction::Outbound).entries().to_vec();
        b.set_spd(
            outbound,
            vec![SpdEntry {
                name: "udp".into(),
                selector: udp_only,
                action: Action::Protect(vec![name].into_boxed_slice()),
            }],
        );
        let hits = b.fast_in_hits;
        assert_eq!(
            open(&mut b, &seal(&mut a)).0,
            Disposition::Drop(DropReason::InnerSelectorMismatch)
        );
        assert_eq!(b.fast_in_hits, hits + 1);
        assert_eq!(in_stats(&b).other_drops, 1);
        assert_eq!(open(&mut b, &sealed(&mut a, 10)).0, Disposition::Deliver);
    }

    /// After a rekey the new inbound SA's first packet takes the general
    /// path, which confirms it and lets the old SA go; the next ones take
    /// the fast path, and the old SPI opens nothing more.
    #[test]
    fn a_new_sa_s_first_packet_takes_the_general_path() {
        let (mut a, mut b) = (gateway(true), gateway(false));
        let old = sealed(&mut a, 20);
        assert_eq!(open(&mut b, &old).0, Disposition::Deliver);
        for (s, name) in [(&mut a, "out"), (&mut b, "in")] {
            let id = s.sad.by_name(name).unwrap();
            let mut params = s.sad.get(id).unwrap().params.clone();
            params.spi = 0x5000;
            params.enc_key = zeroize::Zeroizing::new(vec![0x42; 20]);
            s.install_sa(params, Timestamp::ZERO).unwrap();
        }
        let hits = b.fast_in_hits;
        assert_eq!(open(&mut b, &sealed(&mut a, 20)).0, Disposition::Deliver);
        assert_eq!(b.fast_in_hits, hits, "the first packet took the fast path");
        assert_eq!(open(&mut b, &sealed(&mut a, 20)).0, Disposition::Deliver);
        assert_eq!(b.fast_in_hits, hits + 1);
        assert!(b.sad.by_spi(4096).is_none());
        assert_eq!(
            open(&mut b, &old).0,
            Disposition::Drop(DropReason::UnknownSpi)
        );
    }

    /// The hard packet limit applies to the exact packet that reaches it
    /// on the fast path as on the general path: that packet delivered, the
    /// same dispositions and events, the SA gone after it.
    #[test]
    fn the_hard_packet_limit_applies_as_on_the_general_path() {
        let limited = |fast_path: bool| {
            let mut b = gateway(false);
            b.fast_path = fast_path;
            let id = b.sad.by_name("in").unwrap();
            let mut params = b.sad.get(id).unwrap().params.clone();
            params.hard.packets = Some(3);
            params.enc_key = zeroize::Zeroizing::new(
                (0..20)
                    .map(|i| u8::from_str_radix(&KEY_AB[2 + 2 * i..4 + 2 * i], 16).unwrap())
                    .collect(),
            );
            b.remove_sa(id);
            b.install_sa(params, Timestamp::ZERO).unwrap();
            b
        };
        let (mut fast, mut general) = (limited(true), limited(false));
        let mut a = gateway(true);
        for i in 0..4 {
            let p = sealed(&mut a, 10);
            let (f, g) = (open(&mut fast, &p), open(&mut general, &p));
            assert_eq!(f, g, "packet {i}");
            // The third packet reaches the limit: it is delivered, checked
            // against the SA's selectors, and the SA goes after it.
            let expected = if i < 3 {
                Disposition::Deliver
            } else {
                Disposition::Drop(DropReason::UnknownSpi)
            };
            assert_eq!(f.0, expected, "packet {i}");
        }
        let events = |s: &mut IpsecStage| std::iter::from_fn(|| s.poll_event()).collect::<Vec<_>>();
        let fast_events = events(&mut fast);
        assert!(matches!(fast_events[..], [Event::HardExpired { .. }]));
        assert_eq!(fast_events, events(&mut general));
        assert!(fast.sad.by_spi(4096).is_none());
        assert_eq!(
            open(&mut fast, &sealed(&mut a, 10)).0,
            Disposition::Drop(DropReason::UnknownSpi)
        );
        assert_eq!((fast.fast_in_hits, general.fast_in_hits), (3, 0));
    }
}
