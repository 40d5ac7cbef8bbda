//! The Internet checksum (RFC 1071) and the IPv4/IPv6 pseudo-headers
//! (RFC 768, RFC 8200 8.1).

/// Adds `data` to a running one's-complement sum (not yet folded).
#[inline]
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so very long inputs can not overflow.
        if acc & 0x8000_0000 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds a running sum into the final 16-bit checksum (complemented).
#[inline]
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of `data` alone.
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(0, data))
}

/// Running sum of the pseudo-header for an upper-layer packet of `len`
/// bytes and protocol `proto`, between `src` and `dst` (both 4 or both 16
/// bytes).
pub fn pseudo_header(src: &[u8], dst: &[u8], proto: u8, len: u32) -> u32 {
    let mut acc = sum(0, src);
    acc = sum(acc, dst);
    if src.len() == 4 {
        acc = acc
            .wrapping_add(u32::from(proto))
            .wrapping_add(len & 0xffff);
    } else {
        acc = acc
            .wrapping_add(len >> 16)
            .wrapping_add(len & 0xffff)
            .wrapping_add(u32::from(proto));
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(0, &data)), !0xddf2);
    }

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0);
    }
}
