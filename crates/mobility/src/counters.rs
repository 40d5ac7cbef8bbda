//! Why the mobility stage drops packets, and what it did: every packet it
//! does not pass on is dropped for one named reason and counted.

macro_rules! named_counters {
    ($(#[$tdoc:meta])* $ty:ident { $($(#[$doc:meta])* $variant:ident => $name:literal,)* }) => {
        $(#[$tdoc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $ty {
            $($(#[$doc])* $variant,)*
        }

        impl $ty {
            /// Every value, in counter order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)*];
            /// How many there are.
            pub const COUNT: usize = Self::ALL.len();

            /// The counter's name (snake case, stable: scripts read it).
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)*
                }
            }
        }

        impl core::fmt::Display for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named_counters! {
    /// The reason the mobility stage dropped a packet.
    MobilityDrop {
        /// Not a parseable IPv4 or IPv6 packet.
        Malformed => "mobility_malformed_ip",
        /// A Mobility Header that does not parse: bad length, payload
        /// protocol, truncated or misaligned options (RFC 6275 9.2).
        MhMalformed => "mh_malformed",
        /// A Mobility Header whose checksum is wrong (RFC 6275 9.2).
        MhBadChecksum => "mh_bad_checksum",
        /// A Binding Acknowledgement the mobile node did not ask for, or with
        /// a sequence number it did not send (RFC 6275 11.7.3).
        UnexpectedBa => "ba_unexpected",
        /// A Binding Acknowledgement that came under another SA than the
        /// one the policies give BAs (RFC 3776 4.1, RFC 6275 11.7.3), such
        /// as the payload SA.
        BaOutsideItsSa => "ba_outside_its_sa",
        /// A mobility message this node does not take in its role.
        UnexpectedMh => "mh_unexpected",
        /// Traffic of the home address while away, with no registered
        /// care-of address to carry it yet.
        NoCareOf => "no_care_of_address",
        /// Cleartext from the home address while away: only ESP leaves the
        /// mobile node's tunnel (fail closed).
        ClearFromHome => "cleartext_from_home_address",
        /// Encapsulated traffic from an address that is not the home agent.
        UnknownTunnelPeer => "tunnel_from_unknown_peer",
        /// A UDP (port 4191) or IP-in-IP payload that is not an IP packet.
        BadEncapsulation => "bad_encapsulation",
        /// A Home Address option with no binding for it, on a packet that is
        /// not a Binding Update (RFC 6275 9.3.1; a Binding Error is sent).
        HaoWithoutBinding => "hao_without_binding",
        /// A malformed Home Address option or type 2 routing header, or one
        /// with segments left other than 1 (RFC 6275 6.4, 9.6).
        BadMobilityExtension => "bad_mobility_extension_header",
        /// A Binding Update with an IPv4 care-of address that did not arrive
        /// in UDP over IPv4 (RFC 5555 4.2: NAT detection needs the outer
        /// header).
        NoNatObservation => "bu_ipv4_without_udp",
        /// The buffer had no room for the encapsulation.
        NoBufferRoom => "mobility_no_buffer_room",
        /// A Binding Error or Binding Refresh Request from a node the
        /// mobile node has no Binding Update List entry for (RFC 6275
        /// 11.3.6, 11.7.4): ignored, and never passed to the host.
        NoBindingUpdateListEntry => "mh_without_binding_update_list_entry",
    }
}

named_counters! {
    /// Things the mobility stage did, counted.
    MobilityEvent {
        /// Binding Updates received (home agent).
        BuReceived => "bu_received",
        /// Binding Updates accepted.
        BuAccepted => "bu_accepted",
        /// Binding Updates rejected with an error status in the BA.
        BuRejected => "bu_rejected",
        /// Binding Acknowledgements sent.
        BaSent => "ba_sent",
        /// Binding Errors sent.
        BeSent => "be_sent",
        /// Binding Errors taken from the home agent (mobile node, RFC 6275
        /// 11.3.6).
        BeReceived => "be_received",
        /// Binding Refresh Requests answered with a Binding Update (mobile
        /// node, RFC 6275 11.7.4).
        BrrAnswered => "brr_answered",
        /// Bindings created.
        BindingCreated => "binding_created",
        /// Bindings updated (new care-of address or refresh).
        BindingUpdated => "binding_updated",
        /// Bindings deleted by de-registration.
        BindingDeleted => "binding_deleted",
        /// Bindings that expired.
        BindingExpired => "binding_expired",
        /// NAT detected on a registration (RFC 5555 4.2).
        NatDetected => "nat_detected",
        /// Binding Updates sent (mobile node), first transmissions.
        BuSent => "bu_sent",
        /// Binding Updates sent again after a timeout (RFC 6275 11.8).
        BuRetransmitted => "bu_retransmitted",
        /// Binding Acknowledgements received and taken.
        BaAccepted => "ba_accepted",
        /// Registrations refused by the home agent.
        RegistrationFailed => "registration_failed",
        /// Mobile Prefix Solicitations sent or answered.
        PrefixSolicitation => "mobile_prefix_solicitation",
        /// Mobile Prefix Advertisements sent or taken.
        PrefixAdvertisement => "mobile_prefix_advertisement",
        /// Packets re-addressed to a care-of address (HA) or from one (MN).
        Readdressed => "readdressed",
        /// Packets encapsulated.
        Encapsulated => "encapsulated",
        /// Packets decapsulated.
        Decapsulated => "decapsulated",
        /// Outbound ESP packets the classifier took for a Binding Update.
        ClassifiedBu => "classified_binding_update",
        /// Outbound ESP packets the classifier took for data.
        ClassifiedData => "classified_data",
        /// Packets of a node at home that the inactive tunnel entries would
        /// have taken, passed around IPsec as without mobility (RFC 3776
        /// 4.2).
        AtHomeUntunnelled => "at_home_untunnelled",
        /// Neighbor Solicitations and ARP requests for an away node's home
        /// address answered by the home agent (RFC 6275 10.4.1).
        ProxyAnswered => "proxy_nd_answered",
        /// Unsolicited Neighbor Advertisements sent when a node went away.
        ProxyAnnounced => "proxy_nd_announced",
    }
}

/// The counters of one mobility node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MobilityCounters {
    drops: [u64; MobilityDrop::COUNT],
    events: [u64; MobilityEvent::COUNT],
}

impl Default for MobilityCounters {
    fn default() -> Self {
        MobilityCounters {
            drops: [0; MobilityDrop::COUNT],
            events: [0; MobilityEvent::COUNT],
        }
    }
}

impl MobilityCounters {
    /// Counts one drop.
    pub fn drop(&mut self, reason: MobilityDrop) {
        self.drops[reason as usize] += 1;
    }

    /// Counts one event.
    pub fn event(&mut self, event: MobilityEvent) {
        self.events[event as usize] += 1;
    }

    /// Drops for `reason` so far.
    pub fn drops(&self, reason: MobilityDrop) -> u64 {
        self.drops[reason as usize]
    }

    /// How often `event` happened.
    pub fn events(&self, event: MobilityEvent) -> u64 {
        self.events[event as usize]
    }

    /// Every drop reason with its count.
    pub fn all_drops(&self) -> impl Iterator<Item = (MobilityDrop, u64)> + '_ {
        MobilityDrop::ALL.iter().map(|r| (*r, self.drops(*r)))
    }

    /// Every event with its count.
    pub fn all_events(&self) -> impl Iterator<Item = (MobilityEvent, u64)> + '_ {
        MobilityEvent::ALL.iter().map(|e| (*e, self.events(*e)))
    }

    /// All drops together.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds `other`'s counts to these (reports summed over workers).
    pub fn merge(&mut self, other: &MobilityCounters) {
        for (a, b) in self.drops.iter_mut().zip(&other.drops) {
            *a += b;
        }
        for (a, b) in self.events.iter_mut().zip(&other.events) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_every_counter() {
        let mut a = MobilityCounters::default();
        a.drop(MobilityDrop::NoCareOf);
        a.event(MobilityEvent::BuSent);
        let mut b = MobilityCounters::default();
        b.drop(MobilityDrop::NoCareOf);
        b.event(MobilityEvent::BaAccepted);
        a.merge(&b);
        assert_eq!(a.drops(MobilityDrop::NoCareOf), 2);
        assert_eq!(a.events(MobilityEvent::BuSent), 1);
        assert_eq!(a.events(MobilityEvent::BaAccepted), 1);
        assert_eq!(a.total_drops(), 2);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = MobilityDrop::ALL
            .iter()
            .map(|d| d.name())
            .chain(MobilityEvent::ALL.iter().map(|e| e.name()))
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
