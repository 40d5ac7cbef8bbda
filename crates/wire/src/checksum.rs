//! The Internet checksum (RFC 1071) and the IPv4/IPv6 pseudo-headers
//! (RFC 768, RFC 8200 8.1).

/// Adds `data` to a running one's-complement sum (not yet folded).
///
/// Sums 64-bit big-endian words with end-around carry and folds the
/// result to 16 bits: the one's-complement sum does not depend on the word
/// size it is computed in (RFC 1071 2(C), "parallel summation"), and eight
/// bytes per addition is four times fewer steps than sixteen bits. A
/// trailing odd byte counts as the high byte of a zero-padded word, as
/// RFC 1071 4.1's reference code does.
#[inline]
pub fn sum(acc: u32, data: &[u8]) -> u32 {
    let mut wide = u64::from(acc);
    let mut add = |word: u64| {
        let (s, carry) = wide.overflowing_add(word);
        wide = s + u64::from(carry);
    };
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        add(u64::from_be_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        add(u64::from_be_bytes(word));
    }
    let mut folded = (wide & 0xffff_ffff) + (wide >> 32);
    folded = (folded & 0xffff_ffff) + (folded >> 32);
    folded = (folded & 0xffff) + (folded >> 16);
    folded = (folded & 0xffff) + (folded >> 16);
    folded as u32
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

/// Writes the checksum of the ICMPv6 message `icmp` between `src` and
/// `dst` into its Checksum field, over the pseudo-header and the message
/// (RFC 4443 2.3).
pub fn fill_icmpv6(src: &[u8; 16], dst: &[u8; 16], icmp: &mut [u8]) {
    if icmp.len() < 4 {
        return;
    }
    icmp[2..4].fill(0);
    let len = u32::try_from(icmp.len()).unwrap_or(u32::MAX);
    let acc = pseudo_header(src, dst, crate::proto::ICMPV6, len);
    let c = finish(sum(acc, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
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

    /// The ICMPv6 checksum written over a stale field verifies over the
    /// pseudo-header (RFC 4443 2.3); a message too short for the field is
    /// left alone.
    #[test]
    fn icmpv6_checksum_is_filled_over_a_stale_field() {
        let src = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut icmp = [2, 0, 0xde, 0xad, 0, 0, 5, 0x78, 0x60, 0, 0];
        fill_icmpv6(&src, &dst, &mut icmp);
        let acc = pseudo_header(&src, &dst, crate::proto::ICMPV6, 11);
        assert_eq!(finish(sum(acc, &icmp)), 0);
        let mut short = [1, 2, 3];
        fill_icmpv6(&src, &dst, &mut short);
        assert_eq!(short, [1, 2, 3]);
    }

    /// The RFC 1071 definition, sixteen bits at a time.
    fn reference_sum(mut acc: u64, data: &[u8]) -> u64 {
        for pair in data.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |b| u64::from(*b));
            acc += hi | lo;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(20_000))]
        #[test]
        fn wide_sum_agrees_with_sixteen_bit_sum(
            acc in proptest::prelude::any::<u32>(),
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            // A nonzero sum never folds to zero and both are folded to
            // 16 bits, so equal modulo 2^16 - 1 means equal.
            let want = reference_sum(u64::from(acc), &data);
            proptest::prop_assert_eq!(u64::from(sum(acc, &data)), want);
        }

        #[test]
        fn all_ones_words_and_zero_stay_distinct(n in 1usize..100) {
            // A nonzero sum never folds to zero (RFC 1071's end-around carry).
            let data = vec![0xffu8; 2 * n];
            proptest::prop_assert_eq!(sum(0, &data), 0xffff);
            proptest::prop_assert_eq!(sum(0, &vec![0u8; 2 * n]), 0);
        }
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
