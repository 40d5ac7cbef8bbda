//! ESP encapsulation (RFC 4303 3.1.1, 3.1.2, 3.3), also in UDP (RFC 3948
//! 2.1), with what depends only on the SA worked out beforehand: an
//! [`Outer`] is made once per SA by the fast path ([`super::fast`]) and
//! per packet by the general path, and both seal through
//! [`Outer::encapsulate`], so they put out the same bytes.

use super::*;
use crate::crypto::{Transform, TransformId};
use crate::sa::UdpEncap;

/// What an outbound SA puts around each packet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outer {
    /// Tunnel mode: the outer header's family; `None` in transport mode.
    tunnel: Option<Family>,
    /// Tunnel mode: the outer IP header with the fields that change per
    /// packet left zero (IPv4: TOS, total length, identification, flags,
    /// checksum; IPv6: traffic class and payload length); 20 or 40 bytes
    /// of it are used.
    header: [u8; ip::IPV6_HEADER],
    /// Tunnel mode over IPv4: the ones'-complement sum of the header's
    /// fixed words (version, TTL and protocol, addresses), so a packet's
    /// checksum adds only its own four words.
    fixed_sum: u32,
    udp_encap: Option<UdpEncap>,
    spi: u32,
    esn: bool,
    transform: TransformId,
}

/// Length of a packet of `len` bytes (its IP header `inner_header_len`)
/// once `transform` has encapsulated it in tunnel mode with an outer header
/// of `tunnel`, or in transport mode when `tunnel` is `None`.
pub(super) fn esp_output_len(
    transform: TransformId,
    udp: bool,
    tunnel: Option<Family>,
    len: usize,
    inner_header_len: usize,
) -> usize {
    let udp = if udp { UDP_HEADER_LEN } else { 0 };
    let fixed = ESP_HEADER_LEN + transform.iv_len() + 2 + transform.icv_len() + udp;
    match tunnel {
        Some(family) => {
            let outer = match family {
                Family::V4 => ip::IPV4_MIN_HEADER,
                Family::V6 => ip::IPV6_HEADER,
            };
            outer + fixed + len + transform.pad_len(len)
        }
        None => {
            let payload = len.saturating_sub(inner_header_len);
            inner_header_len + fixed + payload + transform.pad_len(payload)
        }
    }
}

impl Outer {
    /// The encapsulation of outbound SA `sa`, with outer TTL / hop limit
    /// `ttl` (RFC 4301 5.1.2).
    pub(super) fn of(sa: &Sa, ttl: u8) -> Outer {
        let p = &sa.params;
        let next = if p.udp_encap.is_some() {
            proto::UDP
        } else {
            proto::ESP
        };
        let mut header = [0u8; ip::IPV6_HEADER];
        let mut fixed_sum = 0;
        let tunnel = match p.mode {
            Mode::Tunnel { local, remote } => {
                match remote.family {
                    Family::V4 => {
                        let (src, dst) = (addr_bytes4(local), addr_bytes4(remote));
                        ip::emit_ipv4_header(&mut header, src, dst, next, 0, ttl, 0, 0, false);
                        // Emitted with every varying word zero: its sum is
                        // that of the fixed words.
                        header[10] = 0;
                        header[11] = 0;
                        fixed_sum = bitsgw_wire::checksum::sum(0, &header[..ip::IPV4_MIN_HEADER]);
                    }
                    Family::V6 => {
                        let (src, dst) = (addr_bytes16(local), addr_bytes16(remote));
                        ip::emit_ipv6_header(&mut header, src, dst, next, 0, ttl, 0);
                    }
                }
                Some(remote.family)
            }
            Mode::Transport => None,
        };
        Outer {
            tunnel,
            header,
            fixed_sum,
            udp_encap: p.udp_encap,
            spi: p.spi,
            esn: p.esn,
            transform: p.transform,
        }
    }

    /// Length of a packet of `len` bytes (IP header `inner_header_len`)
    /// once encapsulated.
    #[inline]
    pub(super) fn output_len(&self, len: usize, inner_header_len: usize) -> usize {
        esp_output_len(
            self.transform,
            self.udp_encap.is_some(),
            self.tunnel,
            len,
            inner_header_len,
        )
    }

    /// Whether this is transport mode, which refuses fragments.
    #[inline]
    pub(super) fn is_transport(&self) -> bool {
        self.tunnel.is_none()
    }

    /// Encapsulates the packet in `buf` (`meta` is its walk) with sequence
    /// number `seq` and, for an outer IPv4 header, identification `ident`,
    /// sealing it with `transform` (the SA's keyed transform). Returns the
    /// length of the payload protected (the inner packet in tunnel mode,
    /// the upper-layer data in transport mode), for the SA's byte count.
    pub(super) fn encapsulate(
        &self,
        transform: &Transform,
        buf: &mut PacketBuf,
        meta: &IpMeta,
        seq: u64,
        ident: u16,
    ) -> Result<usize, DropReason> {
        let t = self.transform;
        let (iv_len, icv_len) = (t.iv_len(), t.icv_len());
        let udp = if self.udp_encap.is_some() {
            UDP_HEADER_LEN
        } else {
            0
        };
        let Some(family) = self.tunnel else {
            return self.encapsulate_transport(transform, buf, meta, seq, udp);
        };
        let inner_len = buf.len();
        let data = buf.data();
        // RFC 4301 5.1.2.1: TOS / traffic class and DF are copied from the
        // inner header.
        let (next_header, tos, df) = match meta.version {
            IpVersion::V4 => (
                proto::IPV4,
                data.get(1).copied().unwrap_or(0),
                data.get(6).is_some_and(|b| b & 0x40 != 0),
            ),
            IpVersion::V6 => (
                proto::IPV6,
                match data {
                    [a, b, ..] => (a << 4) | (b >> 4),
                    _ => 0,
                },
                false,
            ),
        };
        let pad = t.pad_len(inner_len);
        let tail = buf
            .append(pad + 2 + icv_len)
            .map_err(|_| DropReason::NoBufferRoom)?;
        write_trailer(tail, pad, next_header);
        let hdr = buf
            .prepend(ESP_HEADER_LEN + iv_len)
            .map_err(|_| DropReason::NoBufferRoom)?;
        emit_esp_header(hdr, self.spi, seq as u32);
        transform
            .seal(buf.data_mut(), seq, self.esn)
            .map_err(|_| DropReason::NoBufferRoom)?;
        let body = buf.len() + udp;
        let ip_len = match family {
            Family::V4 => ip::IPV4_MIN_HEADER,
            Family::V6 => ip::IPV6_HEADER,
        };
        let length = match family {
            Family::V4 => body + ip_len,
            Family::V6 => body,
        };
        let length = u16::try_from(length).map_err(|_| DropReason::NoBufferRoom)?;
        let h = buf
            .prepend(ip_len + udp)
            .map_err(|_| DropReason::NoBufferRoom)?;
        let (outer, rest) = h.split_at_mut(ip_len);
        outer.copy_from_slice(&self.header[..ip_len]);
        match family {
            Family::V4 => {
                let flags: u16 = if df { 0x4000 } else { 0 };
                let sum = self.fixed_sum
                    + u32::from(tos)
                    + u32::from(length)
                    + u32::from(ident)
                    + u32::from(flags);
                outer[1] = tos;
                outer[2..4].copy_from_slice(&length.to_be_bytes());
                outer[4..6].copy_from_slice(&ident.to_be_bytes());
                outer[6..8].copy_from_slice(&flags.to_be_bytes());
                outer[10..12].copy_from_slice(&bitsgw_wire::checksum::finish(sum).to_be_bytes());
            }
            Family::V6 => {
                outer[0] = 0x60 | (tos >> 4);
                outer[1] = tos << 4;
                outer[4..6].copy_from_slice(&length.to_be_bytes());
            }
        }
        if let Some(encap) = self.udp_encap {
            let len = u16::try_from(body).unwrap_or(u16::MAX);
            emit_udp_header(rest, encap.local_port, encap.remote_port, len);
            if family == Family::V6 {
                fill_udp_checksum_v6(buf.data_mut(), ip::IPV6_HEADER);
            }
        }
        Ok(inner_len)
    }

    fn encapsulate_transport(
        &self,
        transform: &Transform,
        buf: &mut PacketBuf,
        meta: &IpMeta,
        seq: u64,
        udp: usize,
    ) -> Result<usize, DropReason> {
        if meta.frag.is_some() {
            return Err(DropReason::TransportFragment);
        }
        let t = self.transform;
        let (iv_len, icv_len) = (t.iv_len(), t.icv_len());
        let hl = meta.header_len;
        let payload_len = buf.len() - hl;
        let pad = t.pad_len(payload_len);
        let tail = buf
            .append(pad + 2 + icv_len)
            .map_err(|_| DropReason::NoBufferRoom)?;
        write_trailer(tail, pad, meta.proto);
        let gap = buf
            .insert_gap(hl, udp + ESP_HEADER_LEN + iv_len)
            .map_err(|_| DropReason::NoBufferRoom)?;
        emit_esp_header(&mut gap[udp..], self.spi, seq as u32);
        let total = buf.len();
        let data = buf.data_mut();
        transform
            .seal(&mut data[hl + udp..], seq, self.esn)
            .map_err(|_| DropReason::NoBufferRoom)?;
        data[meta.proto_field] = if udp != 0 { proto::UDP } else { proto::ESP };
        if let Some(encap) = self.udp_encap {
            let len = u16::try_from(total - hl).unwrap_or(u16::MAX);
            emit_udp_header(&mut data[hl..], encap.local_port, encap.remote_port, len);
        }
        ip::set_total_len(data, total);
        if udp != 0 && meta.version == IpVersion::V6 {
            fill_udp_checksum_v6(data, hl);
        }
        Ok(payload_len)
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

pub(super) fn addr_bytes4(a: Addr) -> [u8; 4] {
    (a.bits as u32).to_be_bytes()
}

pub(super) fn addr_bytes16(a: Addr) -> [u8; 16] {
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
