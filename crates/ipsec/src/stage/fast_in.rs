//! The inbound fast path per SPI: the outermost ESP layer of a packet that
//! arrived whole, opened with its SA without what the general path
//! (RFC 4301 5.2, RFC 4303 3.4) works out anew for every packet.
//!
//! The SA comes from the SPI (in a burst, the previous packet's lookup
//! when it named the same SPI at the same SAD generation, see
//! [`super::burst`]). The fast path takes the packet when the SA is in
//! tunnel mode, held by this stage, not stopped, below every lifetime
//! limit ([`crate::sa::Due`]: three comparisons, time against the `now`
//! the caller read once for its batch), bound to no destination address,
//! and has no predecessor still retiring (the first packets after a
//! rekey confirm the new SA on the general path). It then verifies the ICV,
//! checks the anti-replay window and the padding, decrypts in place
//! ([`super::inbound::open_esp`], the same code as the general path's),
//! counts the SA's packets and bytes and compares them with the next
//! limit (the general path's second lifetime check) and takes the outer
//! headers off ([`super::inbound::strip_tunnel`]).
//!
//! Every check fails closed with the general path's reason and counters.
//! The inner packet then goes on exactly as on the general path: another
//! ESP layer of a known SPI (a bundle) is opened there, and the innermost
//! packet is checked against the SA's selectors (RFC 4301 5.2 step 4),
//! whose answer for the SA's last flow is kept until they change.
//! Fragments, transport mode and anything else listed above take the
//! general path from the start.

use super::inbound::{open_esp, strip_tunnel};
use super::*;

/// What the inbound fast path made of a packet.
pub(super) enum FastIn {
    /// Opened: the buffer holds the inner packet, walked here.
    Opened(IpMeta),
    /// Dropped for this reason (not yet counted).
    Dropped(DropReason),
    /// Not for the fast path; the packet is untouched.
    General,
}

impl IpsecStage {
    /// Opens the ESP packet at `off` in `buf` with inbound SA `id` on the
    /// fast path (see the module's text).
    #[inline]
    pub(super) fn inbound_fast(
        &mut self,
        id: SaId,
        buf: &mut PacketBuf,
        off: usize,
        now: Timestamp,
    ) -> FastIn {
        if self.sad.has_retiring(id) {
            return FastIn::General;
        }
        let Some(sa) = self.sad.get_mut(id) else {
            return FastIn::General;
        };
        if sa.state == SaState::Stopped
            || sa.limit_due(now)
            || sa.params.destination.is_some()
            || !matches!(sa.params.mode, Mode::Tunnel { .. })
        {
            return FastIn::General;
        }
        let esn = sa.params.esn;
        let Some(k) = sa.keyed.as_mut() else {
            return FastIn::General;
        };
        let opened = match open_esp(k, esn, buf, off) {
            Ok(o) => o,
            Err(reason) => return FastIn::Dropped(reason),
        };
        sa.stats.packets += 1;
        sa.stats.bytes += opened.payload_len as u64;
        if sa.stats.packets >= sa.due.packets || sa.stats.bytes >= sa.due.bytes {
            self.lifetime_check(id, now);
        }
        #[cfg(test)]
        {
            self.fast_in_hits += 1;
        }
        if opened.next_header == proto::NO_NEXT_HEADER {
            return FastIn::Dropped(DropReason::DummyPacket);
        }
        if buf.trim_back(opened.trailer_len).is_err() {
            return FastIn::Dropped(DropReason::EspTruncated);
        }
        match strip_tunnel(buf, off, &opened) {
            Ok(inner) => FastIn::Opened(inner),
            Err(reason) => FastIn::Dropped(reason),
        }
    }
}
