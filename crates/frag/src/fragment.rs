//! Fragmentation of outbound IPv4 (RFC 791) and IPv6 (RFC 8200 4.5)
//! packets that exceed the MTU.

use bitsgw_wire::ip::{self, IpVersion, IPV4_MIN_HEADER, IPV6_FRAGMENT_HEADER, IPV6_HEADER};
use bitsgw_wire::{proto, PacketBuf};

use crate::FragDrop;

/// The IPv4 header for non-first fragments: the fixed header and the
/// options whose copy flag is set (RFC 791 3.1, "Options"), padded with
/// End of Option List to a multiple of 4. Returns its length.
fn ipv4_later_header(hdr: &[u8], out: &mut [u8; 60]) -> Result<usize, FragDrop> {
    out.fill(0);
    out[..IPV4_MIN_HEADER].copy_from_slice(&hdr[..IPV4_MIN_HEADER]);
    let mut n = IPV4_MIN_HEADER;
    let mut i = IPV4_MIN_HEADER;
    while i < hdr.len() {
        match hdr[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(*hdr.get(i + 1).ok_or(FragDrop::Malformed)?);
                if len < 2 || i + len > hdr.len() {
                    return Err(FragDrop::Malformed);
                }
                if kind & 0x80 != 0 {
                    out[n..n + len].copy_from_slice(&hdr[i..i + len]);
                    n += len;
                }
                i += len;
            }
        }
    }
    let n = n.div_ceil(4) * 4;
    // n <= hdr.len() <= 60, so the IHL fits its nibble.
    out[0] = 0x40 | (n / 4) as u8;
    Ok(n)
}

/// Splits an IPv4 packet into fragments of at most `mtu` bytes (RFC 791
/// 2.3, 3.2): offsets are multiples of 8, the first fragment carries all
/// options and later ones only those with the copy flag set, the
/// identification is kept, and a packet that is itself a fragment is
/// fragmented further (offsets add up, the last piece keeps its MF).
///
/// A packet that fits is passed to `emit` unchanged. Each fragment is
/// written into `scratch` and passed to `emit` in order; returns the
/// number emitted. DF set is refused with [`FragDrop::DontFragment`].
pub fn fragment_ipv4(
    pkt: &[u8],
    mtu: usize,
    scratch: &mut PacketBuf,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, FragDrop> {
    let meta = ip::parse(pkt).map_err(|_| FragDrop::Malformed)?;
    if meta.version != IpVersion::V4 {
        return Err(FragDrop::Malformed);
    }
    let pkt = pkt.get(..meta.total_len).ok_or(FragDrop::Malformed)?;
    if pkt.len() <= mtu {
        emit(pkt);
        return Ok(1);
    }
    let flags_off = u16::from_be_bytes([pkt[6], pkt[7]]);
    if flags_off & 0x4000 != 0 {
        return Err(FragDrop::DontFragment);
    }
    let orig_more = flags_off & 0x2000 != 0;
    let orig_off = usize::from(flags_off & 0x1fff);
    let ihl = meta.header_len;
    let (first_hdr, data) = pkt.split_at(ihl);
    let mut later = [0u8; 60];
    let later_len = ipv4_later_header(first_hdr, &mut later)?;
    let first_room = mtu.saturating_sub(ihl) & !7;
    let later_room = mtu.saturating_sub(later_len) & !7;
    if first_room == 0 || later_room == 0 {
        return Err(FragDrop::MtuTooSmall);
    }
    if orig_off + data.len().div_ceil(8) > 0x1fff + 1 {
        return Err(FragDrop::TooLarge);
    }
    let mut pos = 0;
    let mut count = 0;
    while pos < data.len() {
        let hdr = if pos == 0 {
            first_hdr
        } else {
            &later[..later_len]
        };
        let room = if pos == 0 { first_room } else { later_room };
        let chunk = room.min(data.len() - pos);
        let last = pos + chunk == data.len();
        let len = hdr.len() + chunk;
        let buf = scratch
            .reset_to_len(len)
            .map_err(|_| FragDrop::BufferTooSmall)?;
        buf[..hdr.len()].copy_from_slice(hdr);
        buf[hdr.len()..].copy_from_slice(&data[pos..pos + chunk]);
        let more = !last || orig_more;
        // Checked above: the offset fits 13 bits.
        let off = ((orig_off + pos / 8) & 0x1fff) as u16;
        let field = (flags_off & 0x8000) | if more { 0x2000 } else { 0 } | off;
        buf[6..8].copy_from_slice(&field.to_be_bytes());
        ip::set_total_len(buf, len);
        emit(scratch.data());
        count += 1;
        pos += chunk;
    }
    Ok(count)
}

/// Splits an IPv6 packet into fragments of at most `mtu` bytes (RFC 8200
/// 4.5). The unfragmentable part, repeated in every fragment, is the IPv6
/// header and the extension headers up to and including the last Routing
/// header, or the Hop-by-Hop header when there is no Routing header. A
/// Fragment header with identification `ident` follows it.
///
/// A packet that fits is passed to `emit` unchanged. A packet that already
/// has a Fragment header in its unfragmentable chain is refused
/// ([`FragDrop::Malformed`]): only the source fragments in IPv6. An MTU
/// that would split the header chain (RFC 7112), counting the first 8 bytes
/// of the upper-layer header, is refused with [`FragDrop::MtuTooSmall`].
pub fn fragment_ipv6(
    pkt: &[u8],
    mtu: usize,
    ident: u32,
    scratch: &mut PacketBuf,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, FragDrop> {
    let meta = ip::parse(pkt).map_err(|_| FragDrop::Malformed)?;
    if meta.version != IpVersion::V6 || meta.frag.is_some() {
        return Err(FragDrop::Malformed);
    }
    let pkt = pkt.get(..meta.total_len).ok_or(FragDrop::Malformed)?;
    if pkt.len() <= mtu {
        emit(pkt);
        return Ok(1);
    }
    // Find the end of the unfragmentable part and the Next Header field
    // that names the first fragmentable header.
    let mut unfrag_end = IPV6_HEADER;
    let mut unfrag_field = 6;
    for header in ip::Ipv6ExtHeaders::new(pkt).map_err(|_| FragDrop::Malformed)? {
        let header = header.map_err(|_| FragDrop::Malformed)?;
        let ends_unfragmentable = match header.kind {
            proto::IPV6_FRAGMENT => return Err(FragDrop::Malformed),
            proto::IPV6_ROUTING => true,
            proto::IPV6_HOP_BY_HOP => header.at == IPV6_HEADER,
            _ => false,
        };
        if ends_unfragmentable {
            unfrag_end = header.at + header.len;
            unfrag_field = header.at;
        }
    }
    let (unfrag, rest) = pkt.split_at(unfrag_end);
    let first_next = unfrag[unfrag_field];
    let room = mtu.saturating_sub(unfrag_end + IPV6_FRAGMENT_HEADER) & !7;
    // RFC 7112: the first fragment carries the whole header chain; here,
    // through the first 8 bytes of the upper-layer header.
    let chain = (meta.header_len + 8)
        .min(pkt.len())
        .saturating_sub(unfrag_end);
    if room == 0 || chain > room {
        return Err(FragDrop::MtuTooSmall);
    }
    let mut pos = 0;
    let mut count = 0;
    while pos < rest.len() {
        let chunk = room.min(rest.len() - pos);
        let more = pos + chunk < rest.len();
        let len = unfrag_end + IPV6_FRAGMENT_HEADER + chunk;
        let buf = scratch
            .reset_to_len(len)
            .map_err(|_| FragDrop::BufferTooSmall)?;
        buf[..unfrag_end].copy_from_slice(unfrag);
        buf[unfrag_field] = proto::IPV6_FRAGMENT;
        // pos < rest.len() <= 65535 (the Payload Length field).
        let off_field = (pos as u16 & 0xfff8) | u16::from(more);
        let fh = &mut buf[unfrag_end..unfrag_end + IPV6_FRAGMENT_HEADER];
        fh[0] = first_next;
        fh[1] = 0;
        fh[2..4].copy_from_slice(&off_field.to_be_bytes());
        fh[4..8].copy_from_slice(&ident.to_be_bytes());
        buf[unfrag_end + IPV6_FRAGMENT_HEADER..].copy_from_slice(&rest[pos..pos + chunk]);
        ip::set_total_len(buf, len);
        emit(scratch.data());
        count += 1;
        pos += chunk;
    }
    Ok(count)
}
