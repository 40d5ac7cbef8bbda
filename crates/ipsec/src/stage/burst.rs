//! Bursts: the packets a receive call brought in, through the stage in one
//! call, so that what consecutive packets have in common is worked out
//! once instead of once per packet.
//!
//! Each packet still goes through exactly the path it would take alone
//! ([`IpsecStage::handle_outbound_walked`],
//! [`IpsecStage::handle_inbound_walked`]); a [`Burst`] only remembers
//! answers that can not differ between packets of one burst:
//! - the caller's clock, read once for the burst (the `now` of every
//!   packet);
//! - outbound, the SPD decision of the previous packet's flow: a packet of
//!   the same flow gets the same entry, counted as a hit on it as the flow
//!   cache's answer would be (the SPD can not change within a burst: only
//!   [`IpsecStage::set_spd`] changes it);
//! - inbound, the SA the previous ESP packet's SPI named, stamped with the
//!   SAD's generation, which every change of the SPI mapping moves (also
//!   one a packet of the burst makes: a hard lifetime's removal, a retired
//!   SA let go), so a stale answer is never taken.
//!
//! Dispositions, counters, events and the bytes put out are those of the
//! one-at-a-time path, packet for packet (a differential test below).
//!
//! Inbound cleartext is classified by the SPD's flow cache alone: keeping
//! the previous flow's decision there too made every inbound burst's ESP
//! packets dearer than it saved (BENCHMARKS.md, "Batches through the stage
//! and the inbound fast path").

use super::*;
use crate::selector::FlowKey;

/// What consecutive packets of one burst share (see the module's text).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Burst {
    /// The last flow classified by the outbound SPD, and its entry.
    flow_out: Option<(FlowKey, Option<usize>)>,
    /// The last SPI looked up, its SA, and the SAD generation then.
    spi: Option<(u32, Option<SaId>, u64)>,
}

impl Burst {
    /// The decision for `key` of the outbound SPD `spd`, from the previous
    /// packet's if it was of the same flow.
    #[inline]
    pub(super) fn classify(
        memo: Option<&mut Burst>,
        spd: &mut Spd,
        key: &FlowKey,
    ) -> Option<usize> {
        let Some(memo) = memo else {
            return spd.lookup_and_count(key);
        };
        let last = &mut memo.flow_out;
        match last {
            Some((k, entry)) if k == key => {
                if let Some(i) = *entry {
                    spd.count_hit(i);
                }
                *entry
            }
            _ => {
                let entry = spd.lookup_and_count(key);
                *last = Some((*key, entry));
                entry
            }
        }
    }

    /// The inbound SA with `spi`, from the previous packet's lookup if it
    /// named the same SPI and the SAD has not changed since.
    #[inline]
    pub(super) fn sa_by_spi(memo: Option<&mut Burst>, sad: &Sad, spi: u32) -> Option<SaId> {
        let Some(memo) = memo else {
            return sad.by_spi(spi);
        };
        let generation = sad.generation();
        match memo.spi {
            Some((s, id, g)) if s == spi && g == generation => id,
            _ => {
                let id = sad.by_spi(spi);
                memo.spi = Some((spi, id, generation));
                id
            }
        }
    }
}

impl IpsecStage {
    /// Processes a burst of packets leaving the protected side, each as
    /// [`IpsecStage::handle_outbound_walked`] would with `walked(i)` (the
    /// walk of `packets[i]`, if one was made), all at `now`; the packets'
    /// dispositions go to `dispositions` by position. Returns how many
    /// packets it processed: as many as both slices hold, or fewer when a
    /// packet was fragmented ([`Disposition::Fragmented`]), which ends the
    /// burst so that its fragments are taken from
    /// [`IpsecStage::poll_transmit`] before the next packet's.
    pub fn handle_outbound_burst<'w>(
        &mut self,
        packets: &mut [PacketBuf],
        walked: impl Fn(usize) -> Option<&'w Walked>,
        now: Timestamp,
        dispositions: &mut [Disposition],
    ) -> usize {
        self.burst(Direction::Outbound, packets, walked, now, dispositions)
    }

    /// Processes a burst of packets arriving from the network, each as
    /// [`IpsecStage::handle_inbound_walked`] would (see
    /// [`IpsecStage::handle_outbound_burst`]; inbound nothing is
    /// fragmented, so every packet is processed).
    pub fn handle_inbound_burst<'w>(
        &mut self,
        packets: &mut [PacketBuf],
        walked: impl Fn(usize) -> Option<&'w Walked>,
        now: Timestamp,
        dispositions: &mut [Disposition],
    ) -> usize {
        self.burst(Direction::Inbound, packets, walked, now, dispositions)
    }

    fn burst<'w>(
        &mut self,
        direction: Direction,
        packets: &mut [PacketBuf],
        walked: impl Fn(usize) -> Option<&'w Walked>,
        now: Timestamp,
        dispositions: &mut [Disposition],
    ) -> usize {
        let mut memo = Burst::default();
        let mut done = 0;
        for (i, (buf, d)) in packets.iter_mut().zip(dispositions).enumerate() {
            *d = match direction {
                Direction::Outbound => self.outbound(buf, now, walked(i), Some(&mut memo)),
                Direction::Inbound => self.inbound(buf, now, walked(i), Some(&mut memo)),
            };
            done = i + 1;
            if matches!(d, Disposition::Fragmented(_)) {
                break;
            }
        }
        done
    }
}

#[cfg(test)]
mod tests;
