//! The anti-replay window (RFC 4303 3.4.3 and Appendix A), with extended
//! sequence numbers (RFC 4303 2.2.1, Appendix A2).
//!
//! The window is a ring of bits indexed by the low bits of the sequence
//! number, so advancing it clears only the bits that scroll in, never
//! shifts the whole bitmap. Its storage is sized to the window at SA
//! creation, so a million SAs with the default window cost 8 bytes each.

/// Largest window this implementation accepts (RFC 4303 asks for at least
/// 32, recommends 64; large windows help multi-queue senders).
pub const MAX_WINDOW: u32 = 65536;

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Already received (a duplicate or a replay).
    Duplicate,
    /// Left of the window: too old to tell.
    TooOld,
    /// Sequence number zero is never sent (RFC 4303 3.3.3).
    Zero,
}

/// Receive-side anti-replay state of one SA.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Window size W in packets; 0 turns checking off.
    size: u32,
    /// Highest authenticated sequence number (the window's right edge).
    top: u64,
    /// Ring of `bits.len() * 64` bits; bit `s % ring` is set when `s` was seen.
    bits: Box<[u64]>,
    esn: bool,
}

impl ReplayWindow {
    /// A window of `size` packets (0 = off; larger than [`MAX_WINDOW`] is
    /// clamped), for an SA with or without ESN.
    pub fn new(size: u32, esn: bool) -> Self {
        let size = size.min(MAX_WINDOW);
        // The ring must be a power of two, and larger than the window by at
        // least one word so the bits that scroll in never alias live ones.
        let ring_bits = if size == 0 {
            0
        } else {
            (size as usize + 64).next_power_of_two()
        };
        ReplayWindow {
            size,
            top: 0,
            bits: vec![0u64; ring_bits / 64].into_boxed_slice(),
            esn,
        }
    }

    /// Window size in packets.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Highest sequence number accepted so far.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// The full 64-bit sequence number for a received low half
    /// (RFC 4303 Appendix A2.2). Without ESN the high half is zero.
    pub fn infer(&self, seq_low: u32) -> u64 {
        if !self.esn {
            return u64::from(seq_low);
        }
        let tl = self.top as u32;
        let th = (self.top >> 32) as u32;
        let seql = seq_low;
        let w = self.size.max(1);
        let seqh = if self.size == 0 {
            // No window: pick the candidate nearest the top.
            let candidates = [th.wrapping_sub(1), th, th.wrapping_add(1)];
            let full = |h: u32| (u64::from(h) << 32) | u64::from(seql);
            let dist = |h: u32| full(h).abs_diff(self.top);
            candidates
                .into_iter()
                .filter(|&h| !(h == u32::MAX && th == 0))
                .min_by_key(|&h| dist(h))
                .unwrap_or(th)
        } else if tl >= w - 1 {
            // Case A: the window lies within one sub-space.
            if seql >= tl - (w - 1) {
                th
            } else {
                th.wrapping_add(1)
            }
        } else {
            // Case B: the window spans two sub-spaces.
            let bottom = tl.wrapping_sub(w - 1);
            if seql >= bottom {
                th.wrapping_sub(1)
            } else {
                th
            }
        };
        // Below the first sub-space there is nothing: keep the high half.
        if th == 0 && seqh == u32::MAX {
            return u64::from(seql);
        }
        (u64::from(seqh) << 32) | u64::from(seql)
    }

    fn bit(&self, seq: u64) -> (usize, u64) {
        let ring = self.bits.len() as u64 * 64;
        let idx = seq & (ring - 1);
        ((idx / 64) as usize, 1u64 << (idx % 64))
    }

    /// Whether `seq` would be accepted, without changing the window
    /// (RFC 4303 3.4.3).
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::Zero);
        }
        if self.size == 0 || seq > self.top {
            return Ok(());
        }
        if self.top - seq >= u64::from(self.size) {
            return Err(ReplayError::TooOld);
        }
        let (word, mask) = self.bit(seq);
        if self.bits[word] & mask != 0 {
            Err(ReplayError::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Checks `seq` and, if it is acceptable, records it. Call only after
    /// the packet's ICV has been verified (RFC 4303 3.4.3: the window is
    /// updated only for authenticated packets).
    pub fn check_and_update(&mut self, seq: u64) -> Result<(), ReplayError> {
        self.check(seq)?;
        if self.size == 0 {
            self.top = self.top.max(seq);
            return Ok(());
        }
        if seq > self.top {
            let ring = self.bits.len() as u64 * 64;
            let advance = seq - self.top;
            if advance >= ring {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                // Clear the bits that scroll into the window, a word at a
                // time where possible.
                let mut s = self.top + 1;
                while s <= seq {
                    let (word, mask) = self.bit(s);
                    if s.is_multiple_of(64) && seq - s >= 63 {
                        self.bits[word] = 0;
                        s += 64;
                    } else {
                        self.bits[word] &= !mask;
                        s += 1;
                    }
                }
            }
            self.top = seq;
        }
        let (word, mask) = self.bit(seq);
        self.bits[word] |= mask;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_duplicates_and_too_old() {
        let mut w = ReplayWindow::new(64, false);
        for s in 1..=100 {
            assert_eq!(w.check_and_update(s), Ok(()));
        }
        assert_eq!(w.check_and_update(100), Err(ReplayError::Duplicate));
        assert_eq!(w.check(36), Err(ReplayError::TooOld));
        // The left edge: top - W + 1 = 37 is inside the window (and seen).
        assert_eq!(w.check(37), Err(ReplayError::Duplicate));
        assert_eq!(w.check_and_update(0), Err(ReplayError::Zero));
    }

    #[test]
    fn out_of_order_inside_window_accepted_once() {
        let mut w = ReplayWindow::new(32, false);
        assert_eq!(w.check_and_update(50), Ok(()));
        assert_eq!(w.check_and_update(20), Ok(()));
        assert_eq!(w.check_and_update(20), Err(ReplayError::Duplicate));
        assert_eq!(w.check_and_update(18), Err(ReplayError::TooOld));
        assert_eq!(w.check_and_update(19), Ok(()));
        assert_eq!(w.check_and_update(49), Ok(()));
    }

    #[test]
    fn big_window_4096() {
        let mut w = ReplayWindow::new(4096, false);
        assert_eq!(w.check_and_update(5000), Ok(()));
        assert_eq!(w.check_and_update(905), Ok(()));
        assert_eq!(w.check_and_update(904), Err(ReplayError::TooOld));
        assert_eq!(w.check_and_update(905), Err(ReplayError::Duplicate));
        // A jump larger than the ring clears everything.
        assert_eq!(w.check_and_update(1_000_000), Ok(()));
        assert_eq!(w.check_and_update(999_999), Ok(()));
    }

    #[test]
    fn window_off_accepts_everything_but_zero() {
        let mut w = ReplayWindow::new(0, false);
        assert_eq!(w.check_and_update(5), Ok(()));
        assert_eq!(w.check_and_update(5), Ok(()));
        assert_eq!(w.check_and_update(1), Ok(()));
        assert_eq!(w.check_and_update(0), Err(ReplayError::Zero));
    }

    #[test]
    fn esn_inference_appendix_a2() {
        let mut w = ReplayWindow::new(64, true);
        // Case A: top well inside the first sub-space.
        w.check_and_update(1000).unwrap();
        assert_eq!(w.infer(990), 990);
        assert_eq!(w.infer(1200), 1200);
        // A low half far below the window means the next sub-space.
        assert_eq!(w.infer(5), (1 << 32) | 5);
        // Case B: top just after a wrap; the window reaches back.
        let mut w = ReplayWindow::new(64, true);
        let top = (1u64 << 32) + 10;
        w.check_and_update(top).unwrap();
        assert_eq!(w.infer(0xffff_fff0), 0xffff_fff0);
        assert_eq!(w.infer(12), (1 << 32) | 12);
        assert_eq!(w.check(0xffff_fff0), Ok(()));
        assert_eq!(w.check(0xffff_ff00), Err(ReplayError::TooOld));
    }

    #[test]
    fn without_esn_high_half_is_zero() {
        let mut w = ReplayWindow::new(64, false);
        w.check_and_update(u64::from(u32::MAX)).unwrap();
        assert_eq!(w.infer(5), 5);
        assert_eq!(w.check(5), Err(ReplayError::TooOld));
    }

    proptest! {
        /// The window agrees with a model that remembers every sequence
        /// number it accepted.
        #[test]
        fn agrees_with_model(size in prop::sample::select(vec![1u32, 32, 64, 100, 1024, 4096]),
                             seqs in prop::collection::vec(1u64..20_000, 1..400)) {
            let mut w = ReplayWindow::new(size, false);
            let mut seen = std::collections::BTreeSet::new();
            let mut top = 0u64;
            for s in seqs {
                let expect = if s > top {
                    Ok(())
                } else if top - s >= u64::from(size) {
                    Err(ReplayError::TooOld)
                } else if seen.contains(&s) {
                    Err(ReplayError::Duplicate)
                } else {
                    Ok(())
                };
                prop_assert_eq!(w.check_and_update(s), expect);
                if expect.is_ok() {
                    seen.insert(s);
                    top = top.max(s);
                }
            }
        }
    }
}
