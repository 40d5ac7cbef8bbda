//! Inbound processing (RFC 4301 5.2): reassembly, ESP (also in UDP,
//! RFC 3948) verification and decryption (RFC 4303 3.4), the inner
//! packet's selector check, and the SPD for cleartext.

use super::burst::Burst;
use super::fast_in::FastIn;
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
        self.inbound(buf, now, walked, None)
    }

    /// One inbound packet, alone (`memo` `None`) or in a burst.
    #[inline]
    pub(super) fn inbound(
        &mut self,
        buf: &mut PacketBuf,
        now: Timestamp,
        walked: Option<&Walked>,
        memo: Option<&mut Burst>,
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
        // The SAs that opened a layer: their lifetimes are applied once the
        // packet is through, so the packet that reaches a hard limit is
        // still checked against its SA's selectors and delivered, and the
        // SA goes after it (RFC 4301 4.4.2.1), as outbound.
        let mut opened = [None; MAX_BUNDLE + 1];
        let d = self.open_layers(buf, meta, now, memo, &mut opened);
        for id in opened.into_iter().flatten() {
            self.lifetime_check(id, now);
        }
        d
    }

    /// The ESP layers of an inbound packet, outermost first, then the
    /// innermost packet's check; each SA that opened a layer in `opened`.
    #[inline(always)]
    fn open_layers(
        &mut self,
        buf: &mut PacketBuf,
        mut meta: IpMeta,
        now: Timestamp,
        mut memo: Option<&mut Burst>,
        opened: &mut [Option<SaId>; MAX_BUNDLE + 1],
    ) -> Disposition {
        let mut last_sa: Option<SaId> = None;
        for (depth, layer) in opened.iter_mut().enumerate() {
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
                Burst::sa_by_spi(memo.as_deref_mut(), &self.sad, spi).map(|id| (id, off, udp))
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
            // The outermost ESP layer: the fast path's, unless it hands
            // the packet back untouched.
            if depth == 0 && self.fast_path {
                match self.inbound_fast(id, buf, &meta, off, now) {
                    FastIn::Opened(inner) => {
                        *layer = Some(id);
                        last_sa = Some(id);
                        meta = inner;
                        continue;
                    }
                    FastIn::Dropped(reason) => {
                        self.count_sa_drop(id, reason);
                        return self.dropped(reason);
                    }
                    FastIn::General => {}
                }
            }
            let inner = match self.unprotect(id, buf, &meta, off, udp, now) {
                Ok(inner) => inner,
                Err(reason) => {
                    self.count_sa_drop(id, reason);
                    return self.dropped(reason);
                }
            };
            *layer = Some(id);
            last_sa = Some(id);
            meta = match inner.map_or_else(|| ip::parse(buf.data()), Ok) {
                Ok(m) => m,
                Err(_) => return self.dropped(DropReason::BadInnerPacket),
            };
        }
        self.dropped(DropReason::TooDeep)
    }

    /// Counts a drop of `reason` against inbound SA `id`.
    pub(super) fn count_sa_drop(&mut self, id: SaId, reason: DropReason) {
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

    #[inline(always)]
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
        let opened = open_esp(k, sa.params.esn, buf, off)?;
        sa.stats.packets += 1;
        sa.stats.bytes += opened.payload_len as u64;
        let mode = sa.params.mode;
        let fix_checksum = udp && matches!(mode, Mode::Transport);
        if self.sad.has_retiring(id) {
            self.sad.confirm_in_use(id);
        }
        if opened.next_header == proto::NO_NEXT_HEADER {
            return Err(DropReason::DummyPacket);
        }
        buf.trim_back(opened.trailer_len)
            .map_err(|_| DropReason::EspTruncated)?;
        let (next_header, payload_start) = (opened.next_header, opened.payload_start);
        match mode {
            Mode::Tunnel { .. } => strip_tunnel(buf, off, &opened).map(Some),
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

/// What [`open_esp`] found in an authentic ESP packet's trailer.
pub(super) struct Opened {
    /// Where the payload starts, from the ESP header.
    pub(super) payload_start: usize,
    /// Padding, pad length, next header and ICV: what follows the payload.
    pub(super) trailer_len: usize,
    /// The next header field.
    pub(super) next_header: u8,
    /// Length of the payload (the SA's byte count).
    pub(super) payload_len: usize,
}

/// Verifies the ICV of the ESP packet at `off` in `buf` with the keys and
/// replay window `k`, decrypts it in place and checks its sequence number
/// and padding (RFC 4303 3.4.2 to 3.4.4); the buffer still holds the
/// headers and the trailer. Inlined into both paths that call it, so
/// neither pays for the call.
#[inline(always)]
pub(super) fn open_esp(
    k: &mut crate::sa::Keyed,
    esn: bool,
    buf: &mut PacketBuf,
    off: usize,
) -> Result<Opened, DropReason> {
    let t = k.transform.id();
    let (iv_len, icv_len) = (t.iv_len(), t.icv_len());
    let esp_len = buf.len().saturating_sub(off);
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
        .open(esp, seq, esn)
        .map_err(|_| DropReason::IcvFailure)?;
    k.replay.check_and_update(seq).map_err(replay_drop)?;
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
    Ok(Opened {
        payload_start,
        trailer_len: icv_len + 2 + pad,
        next_header,
        payload_len: ct_end - 2 - pad - payload_start,
    })
}

/// Takes the outer headers off a tunnel-mode packet whose trailer is gone
/// and walks the inner packet, which must be what the next header says.
#[inline(always)]
pub(super) fn strip_tunnel(
    buf: &mut PacketBuf,
    off: usize,
    opened: &Opened,
) -> Result<IpMeta, DropReason> {
    buf.trim_front(off + opened.payload_start)
        .map_err(|_| DropReason::EspTruncated)?;
    let inner = ip::parse(buf.data()).map_err(|_| DropReason::BadInnerPacket)?;
    let expected = match inner.version {
        IpVersion::V4 => proto::IPV4,
        IpVersion::V6 => proto::IPV6,
    };
    if opened.next_header != expected {
        return Err(DropReason::BadInnerPacket);
    }
    // Tunnel-mode TFC padding (RFC 4303 2.7) sits after the inner packet:
    // its own length says where it ends.
    buf.truncate(inner.total_len);
    Ok(inner)
}

/// The drop reason of a packet the anti-replay window refused.
pub(super) fn replay_drop(e: crate::anti_replay::ReplayError) -> DropReason {
    match e {
        crate::anti_replay::ReplayError::Duplicate => DropReason::ReplayDuplicate,
        crate::anti_replay::ReplayError::TooOld => DropReason::ReplayTooOld,
        crate::anti_replay::ReplayError::Zero => DropReason::ReplayZero,
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
