//! Inbound processing (RFC 4301 5.2): reassembly, ESP (also in UDP,
//! RFC 3948) verification and decryption (RFC 4303 3.4), the inner
//! packet's selector check, and the SPD for cleartext.

use super::*;

impl IpsecStage {
    /// Processes a packet arriving from the network: reassembly, ESP (also
    /// in UDP) decryption and checks, or the SPD for cleartext packets.
    pub fn handle_inbound(&mut self, buf: &mut PacketBuf, now: Timestamp) -> Disposition {
        self.handle_inbound_walked(buf, now, None)
    }

    /// [`IpsecStage::handle_inbound`] of a packet an earlier layer has
    /// walked (see [`crate::walked`]): it is not walked again.
    pub fn handle_inbound_walked(
        &mut self,
        buf: &mut PacketBuf,
        now: Timestamp,
        walked: Option<&Walked>,
    ) -> Disposition {
        let Some(mut meta) = self.walk(buf, walked) else {
            return self.dropped(DropReason::Malformed);
        };
        buf.truncate(meta.total_len);
        if meta.frag.is_some() {
            // The reassembled datagram lands in `scratch`, which is then
            // swapped with the caller's buffer; keep it large enough for any
            // datagram the limits allow (this allocates only on the
            // fragment path, and only after such a swap).
            let needed = self.cfg.reassembly.max_datagram_len + bitsgw_wire::buf::DEFAULT_HEADROOM;
            if self.scratch.capacity() < needed {
                self.scratch = PacketBuf::with_capacity(needed, bitsgw_wire::buf::DEFAULT_HEADROOM);
            }
            // Every fragment the reassembler drops is counted here: the
            // arriving one, and held ones discarded with it (an overlap, the
            // memory limit) or before it (its datagram's time was up).
            let mut seen = FragDrop::ALL.map(|r| self.reassembler.dropped(r));
            let result =
                self.reassembler
                    .handle_fragment(buf.data(), &meta, now, &mut self.scratch);
            self.counters
                .record_frag_drops(&self.reassembler, &mut seen);
            match result {
                Ok(Reassembly::Held) => {
                    self.counters.fragments_held += 1;
                    return Disposition::Held;
                }
                Ok(Reassembly::Complete) => {
                    std::mem::swap(buf, &mut self.scratch);
                    self.counters.reassembled += 1;
                    meta = match ip::parse(buf.data()) {
                        Ok(m) => m,
                        Err(_) => return self.dropped(DropReason::Malformed),
                    };
                }
                // Counted above, with the held fragments it took along.
                Err(e) => return Disposition::Drop(e.into()),
            }
        }
        let mut last_sa: Option<SaId> = None;
        for _ in 0..=MAX_BUNDLE {
            let esp_at = match locate_esp(buf.data(), &meta, &self.cfg.udp_encap_ports) {
                EspAt::Esp { offset, udp } => Some((offset, udp)),
                EspAt::Keepalive => return self.dropped(DropReason::NatKeepalive),
                EspAt::Ike => {
                    self.counters.ike_passed += 1;
                    return Disposition::ToIke;
                }
                EspAt::Invalid => return self.dropped(DropReason::UdpEncapInvalid),
                EspAt::NotEsp => None,
            };
            if let Some((off, _)) = esp_at {
                // An ESP header cut short is malformed ESP, whatever the SPD
                // would say of the packet.
                if last_sa.is_none() && buf.len() < off + ESP_HEADER_LEN {
                    return self.dropped(DropReason::EspTruncated);
                }
            }
            let known = esp_at.and_then(|(off, udp)| {
                let spi = EspHeader::new_checked(buf.data().get(off..)?)?.spi();
                self.sad.by_spi(spi).map(|id| (id, off, udp))
            });
            let Some((id, off, udp)) = known else {
                return match last_sa {
                    // The innermost packet: check it against the selectors
                    // of the SA it came out of (RFC 4301 5.2 step 4).
                    Some(sa) => self.check_inner(sa, buf, &meta),
                    None if esp_at.is_some() => self.cleartext_inbound(buf, &meta, true),
                    None => self.cleartext_inbound(buf, &meta, false),
                };
            };
            let inner = match self.unprotect(id, buf, &meta, off, udp, now) {
                Ok(inner) => inner,
                Err(reason) => {
                    self.count_sa_drop(id, reason);
                    return self.dropped(reason);
                }
            };
            last_sa = Some(id);
            meta = match inner.map_or_else(|| ip::parse(buf.data()), Ok) {
                Ok(m) => m,
                Err(_) => return self.dropped(DropReason::BadInnerPacket),
            };
        }
        self.dropped(DropReason::TooDeep)
    }

    /// Counts a drop of `reason` against inbound SA `id`.
    fn count_sa_drop(&mut self, id: SaId, reason: DropReason) {
        if let Some(sa) = self.sad.get_mut(id) {
            match reason {
                DropReason::IcvFailure => sa.stats.icv_failures += 1,
                DropReason::ReplayDuplicate | DropReason::ReplayTooOld => {
                    sa.stats.replay_drops += 1
                }
                DropReason::DummyPacket | DropReason::NoSa | DropReason::NotOwner => {}
                _ => sa.stats.other_drops += 1,
            }
        }
    }

    fn check_inner(&mut self, id: SaId, buf: &PacketBuf, meta: &IpMeta) -> Disposition {
        let key = flow_key(buf.data(), meta, Direction::Inbound);
        let ok = self.sad.get_mut(id).is_some_and(|sa| {
            // The selectors' answer for the flow of the SA's previous
            // packet stands while they are unchanged.
            if sa.inner_flow_matched == Some(key) {
                return true;
            }
            let ok = sa.selectors.iter().any(|s| s.matches(&key));
            if ok {
                sa.inner_flow_matched = Some(key);
            }
            ok
        });
        if !ok {
            if let Some(sa) = self.sad.get_mut(id) {
                sa.stats.other_drops += 1;
            }
            return self.dropped(DropReason::InnerSelectorMismatch);
        }
        self.counters.inbound_decrypted += 1;
        Disposition::Deliver
    }

    /// Inbound packet that is not ESP for one of our SAs: the inbound SPD
    /// decides (RFC 4301 5.2 step 3).
    fn cleartext_inbound(&mut self, buf: &PacketBuf, meta: &IpMeta, is_esp: bool) -> Disposition {
        self.parse_counts.spd_classifications += 1;
        let key = flow_key(buf.data(), meta, Direction::Inbound);
        match self
            .spd_in
            .lookup_and_count(&key)
            .and_then(|i| self.spd_in.get(i))
            .map(|e| &e.action)
        {
            Some(Action::Bypass) => {
                self.counters.inbound_bypassed += 1;
                Disposition::Deliver
            }
            // ESP that no SA takes and no BYPASS entry passes on is an
            // invalid SPI (RFC 4301 5.2 step 3a's auditable event), also
            // where a DISCARD entry covers it: the counter says why.
            _ if is_esp => self.dropped(DropReason::UnknownSpi),
            Some(Action::Discard) => self.dropped(DropReason::PolicyDiscard),
            Some(Action::Protect(_)) => self.dropped(DropReason::UnprotectedTraffic),
            None => self.dropped(DropReason::NoPolicy),
        }
    }

    /// Verifies and decrypts the ESP packet at `off` with SA `id` and
    /// leaves the inner packet in `buf` (RFC 4303 3.4). Returns the inner
    /// packet's walk when it made one (tunnel mode).
    fn unprotect(
        &mut self,
        id: SaId,
        buf: &mut PacketBuf,
        meta: &IpMeta,
        off: usize,
        udp: bool,
        now: Timestamp,
    ) -> Result<Option<IpMeta>, DropReason> {
        if !self.lifetime_check(id, now) {
            return Err(DropReason::NoSa);
        }
        let (_, dst) = addresses(buf.data(), meta);
        let sa = self.sad.get_mut(id).ok_or(DropReason::NoSa)?;
        if sa.params.destination.is_some_and(|d| d != dst) {
            return Err(DropReason::WrongDestination);
        }
        let k = sa.keyed.as_mut().ok_or(DropReason::NotOwner)?;
        let t = k.transform.id();
        let (iv_len, icv_len) = (t.iv_len(), t.icv_len());
        let esp_len = buf.len() - off;
        let min = ESP_HEADER_LEN + iv_len + 2 + icv_len;
        let ct_len = esp_len.saturating_sub(ESP_HEADER_LEN + iv_len + icv_len);
        if esp_len < min || (t.block_align() > 4 && !ct_len.is_multiple_of(t.block_align())) {
            return Err(DropReason::EspTruncated);
        }
        let esp = &mut buf.data_mut()[off..];
        let seq_low = u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]]);
        let seq = k.replay.infer(seq_low);
        // RFC 4303 3.4.3 lets a receiver reject a duplicate before the ICV;
        // doing it after means only authentic packets move the counters.
        k.transform
            .open(esp, seq, sa.params.esn)
            .map_err(|_| DropReason::IcvFailure)?;
        k.replay.check_and_update(seq).map_err(|e| match e {
            crate::anti_replay::ReplayError::Duplicate => DropReason::ReplayDuplicate,
            crate::anti_replay::ReplayError::TooOld => DropReason::ReplayTooOld,
            crate::anti_replay::ReplayError::Zero => DropReason::ReplayZero,
        })?;
        let ct_end = esp_len - icv_len;
        let pad = usize::from(esp[ct_end - 2]);
        let next_header = esp[ct_end - 1];
        let payload_start = ESP_HEADER_LEN + iv_len;
        if pad + 2 > ct_end - payload_start {
            return Err(DropReason::BadPadLength);
        }
        let pad_bytes = &esp[ct_end - 2 - pad..ct_end - 2];
        if pad_bytes
            .iter()
            .enumerate()
            .any(|(i, b)| usize::from(*b) != i + 1)
        {
            return Err(DropReason::BadPadding);
        }
        let payload_len = ct_end - 2 - pad - payload_start;
        sa.stats.packets += 1;
        sa.stats.bytes += payload_len as u64;
        let mode = sa.params.mode;
        let fix_checksum = udp && matches!(mode, Mode::Transport);
        if self.sad.has_retiring(id) {
            self.sad.confirm_in_use(id);
        }
        self.lifetime_check(id, now);
        if next_header == proto::NO_NEXT_HEADER {
            return Err(DropReason::DummyPacket);
        }
        buf.trim_back(icv_len + 2 + pad)
            .map_err(|_| DropReason::EspTruncated)?;
        match mode {
            Mode::Tunnel { .. } => {
                buf.trim_front(off + payload_start)
                    .map_err(|_| DropReason::EspTruncated)?;
                let inner = ip::parse(buf.data()).map_err(|_| DropReason::BadInnerPacket)?;
                let expected = match inner.version {
                    IpVersion::V4 => proto::IPV4,
                    IpVersion::V6 => proto::IPV6,
                };
                if next_header != expected {
                    return Err(DropReason::BadInnerPacket);
                }
                // Tunnel-mode TFC padding (RFC 4303 2.7) sits after the
                // inner packet: its own length says where it ends.
                buf.truncate(inner.total_len);
                Ok(Some(inner))
            }
            Mode::Transport => {
                let hdr_end = meta.header_len;
                buf.remove_range(hdr_end, off - hdr_end + payload_start)
                    .map_err(|_| DropReason::EspTruncated)?;
                let total = buf.len();
                let data = buf.data_mut();
                data[meta.proto_field] = next_header;
                ip::set_total_len(data, total);
                if fix_checksum {
                    // RFC 3948 3.1.2: a NAT may have changed the addresses the
                    // transport checksum covers; recompute it.
                    fix_transport_checksum(data, hdr_end, next_header, meta.version);
                }
                Ok(None)
            }
        }
    }
}

/// Recomputes the TCP or UDP checksum of a transport-mode packet.
fn fix_transport_checksum(pkt: &mut [u8], at: usize, next_header: u8, version: IpVersion) {
    let field = match next_header {
        proto::TCP => 16,
        proto::UDP => 6,
        _ => return,
    };
    if pkt.len() < at + field + 2 {
        return;
    }
    if next_header == proto::UDP && version == IpVersion::V4 && pkt[at + 6..at + 8] == [0, 0] {
        return; // No checksum in use.
    }
    pkt[at + field] = 0;
    pkt[at + field + 1] = 0;
    let (src, dst) = match version {
        IpVersion::V4 => (12..16, 16..20),
        IpVersion::V6 => (8..24, 24..40),
    };
    let len = u32::try_from(pkt.len() - at).unwrap_or(u32::MAX);
    let acc = bitsgw_wire::checksum::pseudo_header(&pkt[src], &pkt[dst], next_header, len);
    let mut c = bitsgw_wire::checksum::finish(bitsgw_wire::checksum::sum(acc, &pkt[at..]));
    if c == 0 && next_header == proto::UDP {
        c = 0xffff;
    }
    pkt[at + field..at + field + 2].copy_from_slice(&c.to_be_bytes());
}
