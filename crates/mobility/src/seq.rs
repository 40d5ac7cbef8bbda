//! Binding Update sequence numbers (RFC 6275 9.5.1): 16-bit, compared
//! modulo 2^16 with a window of 2^15.

/// Whether `new` is newer than `old`: RFC 6275 9.5.1 takes `old < new` to
/// mean `0 < (new - old) mod 2^16 < 2^15`. Equal numbers, and numbers
/// exactly 2^15 apart, are not newer.
pub fn is_newer(new: u16, old: u16) -> bool {
    let d = new.wrapping_sub(old);
    d != 0 && d < 0x8000
}

#[cfg(test)]
mod tests {
    use super::is_newer;

    /// The matrix of RFC 6275 9.5.1: +1, the 2^15 boundary, equal, less,
    /// and across the wrap.
    #[test]
    fn window_matrix() {
        let cases: &[(u16, u16, bool, &str)] = &[
            (1, 0, true, "+1"),
            (0x7fff, 0, true, "+32767 is the last newer value"),
            (0x8000, 0, false, "+32768 is outside the window"),
            (0x8001, 0, false, "+32769 is older (behind by 32767)"),
            (5, 5, false, "equal"),
            (4, 5, false, "less by one"),
            (0, 0xffff, true, "wrap: 0 after 65535"),
            (3, 0xfffe, true, "wrap: +5 across zero"),
            (0xfffe, 3, false, "wrap: -5 across zero"),
            (0x7fff, 0xffff, false, "+32768 across the wrap"),
            (0x7ffe, 0xffff, true, "+32767 across the wrap"),
        ];
        for &(new, old, want, what) in cases {
            assert_eq!(is_newer(new, old), want, "{what}: new {new} old {old}");
        }
    }

    proptest::proptest! {
        /// Exactly one of a < b, b < a, a == b or "2^15 apart" holds.
        #[test]
        fn trichotomy(a: u16, b: u16) {
            let apart = a.wrapping_sub(b) == 0x8000;
            let n = [is_newer(a, b), is_newer(b, a), a == b, apart]
                .iter()
                .filter(|x| **x)
                .count();
            proptest::prop_assert_eq!(n, 1);
        }
    }
}
