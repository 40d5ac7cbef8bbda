//! Why packets are dropped, and the counters that say how often.
//!
//! Every packet the stage does not pass on is dropped for exactly one of
//! these reasons, and each reason has its own counter: nothing is lost
//! silently.

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// The reason a packet was dropped (or consumed) by the IPsec stage.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum DropReason {
            $($(#[$doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// The counter's name (snake case, stable: scripts read it).
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Not a parseable IPv4 or IPv6 packet.
    Malformed => "malformed_ip",
    /// No SPD entry matched (RFC 4301 4.4.1: the default is to discard).
    NoPolicy => "no_policy",
    /// A DISCARD entry matched.
    PolicyDiscard => "policy_discard",
    /// A PROTECT entry matched but its SA is missing, expired or stopped:
    /// the packet is dropped rather than sent in clear.
    NoSa => "no_sa",
    /// A PROTECT entry matched and its SA, negotiated on demand, is not
    /// installed yet: key management was asked for it (RFC 4301 acquire)
    /// and the packet dropped rather than sent in clear.
    AcquirePending => "acquire_pending",
    /// The outbound SA's sequence counter would cycle (RFC 4303 3.3.3).
    SeqOverflow => "seq_overflow",
    /// The outbound SA has no sequence numbers leased beyond the last one
    /// sent (see [`crate::stage::IpsecStage::grant_lease`]): the packet is
    /// dropped rather than risk a (key, sequence number) pair, the nonce of
    /// the counter-mode transforms, that an earlier run already used.
    SeqLeaseExhausted => "seq_lease_exhausted",
    /// Cleartext inbound traffic covered by an inbound PROTECT entry
    /// (RFC 4301 5.2).
    UnprotectedTraffic => "unprotected_for_protect_policy",
    /// ESP with an SPI no inbound SA has.
    UnknownSpi => "unknown_spi",
    /// ESP whose destination is not the SA's (RFC 4301 4.1).
    WrongDestination => "sa_destination_mismatch",
    /// ESP too short for its header, IV and ICV, or not block aligned.
    EspTruncated => "esp_truncated",
    /// The ICV did not verify (RFC 4303 3.4.4).
    IcvFailure => "icv_failure",
    /// A sequence number already received (RFC 4303 3.4.3).
    ReplayDuplicate => "replay_duplicate",
    /// A sequence number left of the replay window.
    ReplayTooOld => "replay_too_old",
    /// Sequence number zero.
    ReplayZero => "replay_seq_zero",
    /// Padding bytes not 1, 2, 3... (RFC 4303 2.4).
    BadPadding => "bad_padding",
    /// Pad length past the payload.
    BadPadLength => "bad_pad_length",
    /// A dummy packet, next header 59 (RFC 4303 2.6): dropped by design.
    DummyPacket => "dummy_packet",
    /// The decrypted packet is not what the SA carries (bad inner header,
    /// or a next header the mode can not carry).
    BadInnerPacket => "bad_inner_packet",
    /// The decrypted packet does not match the SA's selectors (RFC 4301 5.2).
    InnerSelectorMismatch => "inner_selector_mismatch",
    /// A packet buffer without the room the encapsulation needs.
    NoBufferRoom => "no_buffer_room",
    /// Outbound fragment under a transport-mode policy (RFC 4303 3.1.1
    /// applies transport mode to whole datagrams only).
    TransportFragment => "transport_mode_fragment",
    /// Outbound packet too big, and it may not be fragmented; an ICMP error
    /// was sent back instead (RFC 4301 8).
    TooBig => "too_big_icmp_sent",
    /// A NAT-keepalive (RFC 3948 2.3): consumed by design.
    NatKeepalive => "nat_keepalive",
    /// UDP on an ESP-in-UDP port that is neither ESP, IKE nor a keepalive.
    UdpEncapInvalid => "udp_encap_invalid",
    /// A malformed IP fragment.
    FragMalformed => "frag_malformed",
    /// Overlapping fragments: the whole datagram is dropped (RFC 5722).
    FragOverlap => "frag_overlap",
    /// A reassembled datagram would exceed its limit.
    FragTooLarge => "frag_too_large",
    /// Reassembly memory exhausted.
    FragMemory => "frag_memory_limit",
    /// Too many datagrams in reassembly at once.
    FragTooMany => "frag_too_many_datagrams",
    /// Fragments of a datagram that never completed.
    FragTimeout => "frag_timeout",
    /// ESP nested deeper than the stage unwraps.
    TooDeep => "esp_nesting_too_deep",
    /// The SA is another worker's: this stage holds no keys, counter or
    /// window for it (see [`crate::ownership`]), so a packet that reached
    /// the wrong thread is dropped, never sealed or opened a second time.
    NotOwner => "not_owner",
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters of the IPsec stage as a whole.
#[derive(Debug, Clone)]
pub struct StageCounters {
    /// Drops by reason, indexed by the reason's position in [`DropReason::ALL`].
    drops: [u64; DropReason::COUNT],
    /// Outbound packets protected with ESP.
    pub outbound_protected: u64,
    /// Outbound packets passed by a BYPASS entry.
    pub outbound_bypassed: u64,
    /// Inbound packets decrypted and delivered.
    pub inbound_decrypted: u64,
    /// Inbound packets passed by a BYPASS entry.
    pub inbound_bypassed: u64,
    /// Inbound IKE messages (non-ESP marker) handed on.
    pub ike_passed: u64,
    /// Fragments held for reassembly.
    pub fragments_held: u64,
    /// Datagrams reassembled.
    pub reassembled: u64,
    /// Outbound fragments sent.
    pub fragments_sent: u64,
}

impl Default for StageCounters {
    fn default() -> Self {
        StageCounters {
            drops: [0; DropReason::COUNT],
            outbound_protected: 0,
            outbound_bypassed: 0,
            inbound_decrypted: 0,
            inbound_bypassed: 0,
            ike_passed: 0,
            fragments_held: 0,
            reassembled: 0,
            fragments_sent: 0,
        }
    }
}

impl StageCounters {
    /// Counts one drop.
    #[inline]
    pub fn record(&mut self, reason: DropReason) {
        self.add_drops(reason, 1);
    }

    /// Counts `n` drops.
    #[inline]
    pub fn add_drops(&mut self, reason: DropReason, n: u64) {
        let i = reason as usize;
        if let Some(c) = self.drops.get_mut(i) {
            *c += n;
        }
    }

    /// Drops counted for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason as usize).copied().unwrap_or(0)
    }

    /// All drops, whatever the reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Counts the fragments `reassembler` dropped since it had dropped
    /// `seen` (every one: an arriving fragment, the held ones discarded
    /// with it, those whose time ran out), and updates `seen`. Whoever
    /// owns a reassembler calls this after each of its operations, so no
    /// fragment is dropped uncounted.
    pub fn record_frag_drops(
        &mut self,
        reassembler: &bitsgw_frag::Reassembler,
        seen: &mut [u64; bitsgw_frag::FragDrop::ALL.len()],
    ) {
        for (r, was) in bitsgw_frag::FragDrop::ALL.iter().zip(seen.iter_mut()) {
            let now = reassembler.dropped(*r);
            if now != *was {
                self.add_drops((*r).into(), now - *was);
                *was = now;
            }
        }
    }

    /// Every reason with a non-zero count.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.drops(*r)))
            .filter(|(_, n)| *n != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_counters_index_right() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        let mut c = StageCounters::default();
        c.record(DropReason::IcvFailure);
        c.add_drops(DropReason::TooDeep, 3);
        assert_eq!(c.drops(DropReason::IcvFailure), 1);
        assert_eq!(c.drops(DropReason::TooDeep), 3);
        assert_eq!(c.total_drops(), 4);
        assert_eq!(c.nonzero_drops().count(), 2);
    }
}
