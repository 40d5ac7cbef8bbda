//! Outbound processing (RFC 4301 5.1): SPD lookup, then BYPASS, DISCARD
//! or ESP protection with the entry's SA or bundle (RFC 4303 3.1, 3.3),
//! with the MTU decided before a sequence number is spent (RFC 4301 8).

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
                self.spd_out.lookup_and_count(&key)
            }
        };
        let Some(pos) = found else {
            return self.dropped(DropReason::NoPolicy);
        };
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
        let t = sa.params.transform;
        let udp = if sa.params.udp_encap.is_some() {
            UDP_HEADER_LEN
        } else {
            0
        };
        let fixed = ESP_HEADER_LEN + t.iv_len() + 2 + t.icv_len() + udp;
        match sa.params.mode {
            Mode::Tunnel { remote, .. } => {
                let outer = match remote.family {
                    Family::V4 => ip::IPV4_MIN_HEADER,
                    Family::V6 => ip::IPV6_HEADER,
                };
                outer + fixed + len + t.pad_len(len)
            }
            Mode::Transport => {
                let payload = len.saturating_sub(inner_header_len);
                inner_header_len + fixed + payload + t.pad_len(payload)
            }
        }
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
        let k = sa.keyed.as_mut().ok_or(DropReason::NotOwner)?;
        // RFC 4303 3.3.3: the counter never cycles; without ESN the last
        // usable number is 2^32 - 1.
        let limit = if sa.params.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        if k.seq_out >= limit {
            sa.state = SaState::Stopped;
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
        let t = k.transform.id();
        let (iv_len, icv_len) = (t.iv_len(), t.icv_len());
        let spi = sa.params.spi;
        let payload_len;
        match sa.params.mode {
            Mode::Tunnel { local, remote } => {
                let inner_len = buf.len();
                payload_len = inner_len;
                let next_header = match meta.version {
                    IpVersion::V4 => proto::IPV4,
                    IpVersion::V6 => proto::IPV6,
                };
                let tos = ip::traffic_class(buf.data());
                let df = meta.version == IpVersion::V4
                    && buf.data().get(6).is_some_and(|b| b & 0x40 != 0);
                let pad = t.pad_len(inner_len);
                let tail = buf
                    .append(pad + 2 + icv_len)
                    .map_err(|_| DropReason::NoBufferRoom)?;
                write_trailer(tail, pad, next_header);
                let hdr = buf
                    .prepend(ESP_HEADER_LEN + iv_len)
                    .map_err(|_| DropReason::NoBufferRoom)?;
                emit_esp_header(hdr, spi, seq as u32);
                k.transform
                    .seal(buf.data_mut(), seq, sa.params.esn)
                    .map_err(|_| DropReason::NoBufferRoom)?;
                if let Some(encap) = sa.params.udp_encap {
                    let len = buf.len() + UDP_HEADER_LEN;
                    let udp = buf
                        .prepend(UDP_HEADER_LEN)
                        .map_err(|_| DropReason::NoBufferRoom)?;
                    emit_udp_header(
                        udp,
                        encap.local_port,
                        encap.remote_port,
                        u16::try_from(len).unwrap_or(u16::MAX),
                    );
                }
                let next = if sa.params.udp_encap.is_some() {
                    proto::UDP
                } else {
                    proto::ESP
                };
                let body = buf.len();
                match remote.family {
                    Family::V4 => {
                        let total = u16::try_from(body + ip::IPV4_MIN_HEADER)
                            .map_err(|_| DropReason::NoBufferRoom)?;
                        let h = buf
                            .prepend(ip::IPV4_MIN_HEADER)
                            .map_err(|_| DropReason::NoBufferRoom)?;
                        ip::emit_ipv4_header(
                            h,
                            addr_bytes4(local),
                            addr_bytes4(remote),
                            next,
                            total,
                            ttl,
                            ident,
                            tos,
                            df,
                        );
                    }
                    Family::V6 => {
                        let plen = u16::try_from(body).map_err(|_| DropReason::NoBufferRoom)?;
                        let h = buf
                            .prepend(ip::IPV6_HEADER)
                            .map_err(|_| DropReason::NoBufferRoom)?;
                        ip::emit_ipv6_header(
                            h,
                            addr_bytes16(local),
                            addr_bytes16(remote),
                            next,
                            plen,
                            ttl,
                            tos,
                        );
                        if sa.params.udp_encap.is_some() {
                            fill_udp_checksum_v6(buf.data_mut(), ip::IPV6_HEADER);
                        }
                    }
                }
            }
            Mode::Transport => {
                if meta.frag.is_some() {
                    return Err(DropReason::TransportFragment);
                }
                let hl = meta.header_len;
                payload_len = buf.len() - hl;
                let pad = t.pad_len(payload_len);
                let tail = buf
                    .append(pad + 2 + icv_len)
                    .map_err(|_| DropReason::NoBufferRoom)?;
                write_trailer(tail, pad, meta.proto);
                let udp = if sa.params.udp_encap.is_some() {
                    UDP_HEADER_LEN
                } else {
                    0
                };
                let gap = buf
                    .insert_gap(hl, udp + ESP_HEADER_LEN + iv_len)
                    .map_err(|_| DropReason::NoBufferRoom)?;
                emit_esp_header(&mut gap[udp..], spi, seq as u32);
                let total = buf.len();
                let data = buf.data_mut();
                k.transform
                    .seal(&mut data[hl + udp..], seq, sa.params.esn)
                    .map_err(|_| DropReason::NoBufferRoom)?;
                data[meta.proto_field] = if udp != 0 { proto::UDP } else { proto::ESP };
                if let Some(encap) = sa.params.udp_encap {
                    let len = u16::try_from(total - hl).unwrap_or(u16::MAX);
                    emit_udp_header(&mut data[hl..], encap.local_port, encap.remote_port, len);
                }
                ip::set_total_len(data, total);
                if udp != 0 && meta.version == IpVersion::V6 {
                    fill_udp_checksum_v6(data, hl);
                }
            }
        }
        k.seq_out = seq;
        sa.stats.packets += 1;
        sa.stats.bytes += payload_len as u64;
        self.lifetime_check(id, now);
        Ok(())
    }
}

/// Writes the ESP trailer (RFC 4303 2.4: padding 1, 2, 3..., pad length,
/// next header) into `tail`, whose length is `pad + 2 + icv`.
#[inline]
fn write_trailer(tail: &mut [u8], pad: usize, next_header: u8) {
    for (i, b) in tail[..pad].iter_mut().enumerate() {
        *b = (i + 1) as u8;
    }
    tail[pad] = pad as u8;
    tail[pad + 1] = next_header;
}

fn addr_bytes4(a: Addr) -> [u8; 4] {
    (a.bits as u32).to_be_bytes()
}

fn addr_bytes16(a: Addr) -> [u8; 16] {
    a.bits.to_be_bytes()
}

/// Fills the UDP checksum of the UDP header at `udp_at` in an IPv6 packet
/// (mandatory for IPv6, RFC 8200 8.1).
fn fill_udp_checksum_v6(pkt: &mut [u8], udp_at: usize) {
    if pkt.len() < udp_at + UDP_HEADER_LEN {
        return;
    }
    pkt[udp_at + 6] = 0;
    pkt[udp_at + 7] = 0;
    let (hdr, udp) = pkt.split_at_mut(udp_at);
    let c = udp_checksum(&hdr[8..24], &hdr[24..40], udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
}
