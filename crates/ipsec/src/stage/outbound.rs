//! Outbound processing (RFC 4301 5.1): SPD lookup, then BYPASS, DISCARD
//! or ESP protection with the entry's SA or bundle (RFC 4303 3.1, 3.3),
//! with the MTU decided before a sequence number is spent (RFC 4301 8).

use super::burst::Burst;
use super::encap::{addr_bytes16, addr_bytes4, esp_output_len, Outer};
use super::*;

impl IpsecStage {
    /// Processes a packet leaving the protected side: SPD lookup, then
    /// BYPASS, DISCARD or ESP protection with the entry's SA(s).
    pub fn handle_outbound(&mut self, buf: &mut PacketBuf, now: Timestamp) -> Disposition {
        self.handle_outbound_walked(buf, now, None)
    }

    /// [`IpsecStage::handle_outbound`] of a packet an earlier layer has
    /// walked and classified (see [`crate::walked`]): neither is done
    /// again, unless the decision was made against another SPD.
    pub fn handle_outbound_walked(
        &mut self,
        buf: &mut PacketBuf,
        now: Timestamp,
        walked: Option<&Walked>,
    ) -> Disposition {
        self.outbound(buf, now, walked, None)
    }

    /// One outbound packet, alone (`memo` `None`) or in a burst.
    #[inline]
    pub(super) fn outbound(
        &mut self,
        buf: &mut PacketBuf,
        now: Timestamp,
        walked: Option<&Walked>,
        memo: Option<&mut Burst>,
    ) -> Disposition {
        let Some(meta) = self.walk(buf, walked) else {
            return self.dropped(DropReason::Malformed);
        };
        buf.truncate(meta.total_len);
        let decided = walked
            .and_then(|w| w.spd)
            .filter(|d| d.spd == self.spd_out.fingerprint());
        let found = match decided {
            Some(d) => {
                if let Some(i) = d.entry {
                    self.spd_out.count_hit(i);
                }
                d.entry
            }
            None => {
                self.parse_counts.spd_classifications += 1;
                let key = flow_key(buf.data(), &meta, Direction::Outbound);
                Burst::classify(memo, &mut self.spd_out, &key)
            }
        };
        let Some(pos) = found else {
            return self.dropped(DropReason::NoPolicy);
        };
        if self.fast_path {
            if let Some(d) = self.outbound_fast(pos, buf, &meta, now) {
                return d;
            }
        }
        let mut bundle = [SaId(0); MAX_BUNDLE];
        let n = match self.spd_out.get(pos).map(|e| &e.action) {
            Some(Action::Bypass) => {
                self.counters.outbound_bypassed += 1;
                return Disposition::Forward;
            }
            Some(Action::Discard) | None => return self.dropped(DropReason::PolicyDiscard),
            Some(Action::Protect(names)) => {
                if names.len() > MAX_BUNDLE {
                    return self.dropped(DropReason::TooDeep);
                }
                for (slot, name) in bundle.iter_mut().zip(names.iter()) {
                    match self.sad.current(*name) {
                        Some(id) => *slot = id,
                        None => return Self::missing_sa(&self.acquires, &mut self.counters, *name),
                    }
                }
                names.len()
            }
        };
        for id in &bundle[..n] {
            if !self.lifetime_check(*id, now) {
                return self.dropped(DropReason::NoSa);
            }
        }
        // RFC 4301 8: decide on fragmentation before any sequence number
        // is spent.
        let original_len = buf.len();
        let final_len = self.bundle_output_len(&bundle[..n], original_len, &meta);
        let mut fragment_after = false;
        if final_len > self.cfg.mtu {
            match self.too_big(buf, &meta, &bundle[..n], original_len, final_len) {
                Some(d) => return d,
                None => fragment_after = true,
            }
        }
        let mut meta = meta;
        for (i, id) in bundle[..n].iter().enumerate() {
            if i > 0 {
                // The packet is now the previous SA's ESP packet.
                meta = match ip::parse(buf.data()) {
                    Ok(m) => m,
                    Err(_) => return self.dropped(DropReason::Malformed),
                };
            }
            if let Err(reason) = self.protect(*id, buf, &meta, now) {
                return self.dropped(reason);
            }
        }
        self.counters.outbound_protected += 1;
        if fragment_after {
            return self.fragment_out(buf);
        }
        Disposition::Forward
    }

    /// Length of a packet of `len` bytes after one SA's encapsulation.
    fn output_len(sa: &Sa, len: usize, inner_header_len: usize) -> usize {
        let tunnel = match sa.params.mode {
            Mode::Tunnel { remote, .. } => Some(remote.family),
            Mode::Transport => None,
        };
        esp_output_len(
            sa.params.transform,
            sa.params.udp_encap.is_some(),
            tunnel,
            len,
            inner_header_len,
        )
    }

    fn bundle_output_len(&self, bundle: &[SaId], len: usize, meta: &IpMeta) -> usize {
        let mut len = len;
        let mut header_len = meta.header_len;
        for id in bundle {
            if let Some(sa) = self.sad.get(*id) {
                len = Self::output_len(sa, len, header_len);
                if let Mode::Tunnel { remote, .. } = sa.params.mode {
                    header_len = match remote.family {
                        Family::V4 => ip::IPV4_MIN_HEADER,
                        Family::V6 => ip::IPV6_HEADER,
                    };
                }
            }
        }
        len
    }

    /// An outbound packet would exceed the MTU once protected. Either the
    /// sender is told (ICMP, returned as the disposition) or the protected
    /// packet will be fragmented (`None`). RFC 4301 8.1, 8.2.
    fn too_big(
        &mut self,
        buf: &mut PacketBuf,
        meta: &IpMeta,
        bundle: &[SaId],
        original_len: usize,
        final_len: usize,
    ) -> Option<Disposition> {
        let df = match meta.version {
            IpVersion::V4 => buf.data().get(6).is_some_and(|b| b & 0x40 != 0),
            IpVersion::V6 => true,
        };
        if !df {
            return None;
        }
        // The largest packet that still fits once protected.
        let mut fits = original_len.saturating_sub(final_len - self.cfg.mtu.min(final_len));
        while fits > 0 && self.bundle_output_len(bundle, fits, meta) > self.cfg.mtu {
            fits -= 1;
        }
        // IPv6 never reports less than 1280 (RFC 8200 5): the tunnel
        // fragments instead.
        if meta.version == IpVersion::V6 && fits < 1280 {
            return None;
        }
        let (src, dst) = addresses(buf.data(), meta);
        let tunnel_local = bundle
            .iter()
            .filter_map(|id| self.sad.get(*id))
            .find_map(|sa| match sa.params.mode {
                Mode::Tunnel { local, .. } if local.family == src.family => Some(local),
                _ => None,
            });
        let result = match meta.version {
            IpVersion::V4 => {
                let source = self
                    .cfg
                    .icmp_source_v4
                    .unwrap_or_else(|| addr_bytes4(tunnel_local.unwrap_or(dst)));
                let mtu = u16::try_from(fits).unwrap_or(u16::MAX);
                frag::icmpv4_frag_needed(buf.data(), mtu, source, &mut self.scratch)
            }
            IpVersion::V6 => {
                let source = self
                    .cfg
                    .icmp_source_v6
                    .unwrap_or_else(|| addr_bytes16(tunnel_local.unwrap_or(dst)));
                let mtu = u32::try_from(fits).unwrap_or(u32::MAX);
                frag::icmpv6_packet_too_big(buf.data(), mtu, source, &mut self.scratch)
            }
        };
        match result {
            Ok(()) => {
                std::mem::swap(buf, &mut self.scratch);
                self.counters.record(DropReason::TooBig);
                Some(Disposition::IcmpError)
            }
            Err(e) => Some(self.dropped(e.into())),
        }
    }

    fn fragment_out(&mut self, buf: &mut PacketBuf) -> Disposition {
        let mtu = self.cfg.mtu;
        let (queue, spare, scratch) = (&mut self.tx_queue, &mut self.spare, &mut self.scratch);
        let mut emit = |frag: &[u8]| {
            let mut b = spare.pop().unwrap_or_default();
            if b.set(frag).is_ok() {
                queue.push_back(b);
            }
        };
        let result = match ip::version(buf.data()) {
            Ok(IpVersion::V4) => frag::fragment_ipv4(buf.data(), mtu, scratch, &mut emit),
            Ok(IpVersion::V6) => {
                self.ident_v6 = self.ident_v6.wrapping_add(1);
                frag::fragment_ipv6(buf.data(), mtu, self.ident_v6, scratch, &mut emit)
            }
            Err(_) => Err(FragDrop::Malformed),
        };
        match result {
            Ok(count) => {
                self.counters.fragments_sent += count as u64;
                Disposition::Fragmented(count)
            }
            Err(e) => self.dropped(e.into()),
        }
    }

    /// ESP-protects the packet in `buf` with SA `id` (RFC 4303 3.1, 3.3).
    /// `meta` is what `ip::parse` says of the packet in `buf`.
    fn protect(
        &mut self,
        id: SaId,
        buf: &mut PacketBuf,
        meta: &IpMeta,
        now: Timestamp,
    ) -> Result<(), DropReason> {
        let ident = self.ident_v4;
        self.ident_v4 = self.ident_v4.wrapping_add(1);
        let ttl = self.cfg.outer_ttl;
        let sa = self.sad.get_mut(id).ok_or(DropReason::NoSa)?;
        if sa.state == SaState::Stopped {
            return Err(DropReason::NoSa);
        }
        let outer = Outer::of(sa, ttl);
        let k = sa.keyed.as_mut().ok_or(DropReason::NotOwner)?;
        if k.seq_out >= last_sequence_number(sa.params.esn) {
            sa.set_state(SaState::Stopped);
            let event = Event::SeqOverflow {
                sa: id,
                name: sa.params.name.clone(),
                spi: sa.params.spi,
            };
            self.events.push_back(event);
            return Err(DropReason::SeqOverflow);
        }
        let seq = k.seq_out + 1;
        if seq >= k.lease_renew_at {
            k.lease_wanted = true;
            self.leases_wanted = true;
            if k.seq_ceiling.is_some_and(|c| seq > c) {
                return Err(DropReason::SeqLeaseExhausted);
            }
        }
        let payload_len = outer.encapsulate(&k.transform, buf, meta, seq, ident)?;
        k.seq_out = seq;
        sa.stats.packets += 1;
        sa.stats.bytes += payload_len as u64;
        self.lifetime_check(id, now);
        Ok(())
    }
}

/// The last sequence number an SA may send: the counter never cycles
/// (RFC 4303 3.3.3), so without ESN it stops at 2^32 - 1.
#[inline]
pub(super) fn last_sequence_number(esn: bool) -> u64 {
    if esn {
        u64::MAX
    } else {
        u64::from(u32::MAX)
    }
}
