//! What becomes of Ethernet frames that do not carry IP (after the VLAN
//! tags [`bitsgw_wire::ether::Layer2`] walks), inline.
//!
//! A bump in the wire must not let traffic a PROTECT policy covers slip
//! past the SPD inside an encapsulation it does not look into (PPPoE,
//! MPLS, LLC/SNAP, a `0x9100` or deeper VLAN stack): fail closed. ARP, on
//! its own or inside the tags bitsgw understands, passes, as the hosts
//! need it; everything else is dropped and counted by EtherType
//! ([`Layer2Drops`]) unless the configuration allows it
//! ([`Layer2Policy`]).

use bitsgw_wire::ether::{ETHERTYPE_ARP, ETHERTYPE_MIN};

/// Which non-IP frames pass the bump unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer2Policy {
    /// Every non-IP frame passes (the behaviour before bitsgw looked at
    /// layer 2; an explicit choice `check` warns about).
    pub pass_unknown: bool,
    /// EtherTypes that pass besides ARP (as found after the VLAN tags).
    pub allow: Vec<u16>,
}

impl Layer2Policy {
    /// Whether a frame whose payload has `ethertype` (not IP) passes.
    #[inline]
    pub fn passes(&self, ethertype: u16) -> bool {
        ethertype == ETHERTYPE_ARP || self.pass_unknown || self.allow.contains(&ethertype)
    }
}

/// The EtherTypes [`Layer2Drops`] counts on their own, with a name for
/// people; the rest share one "other" counter, and every IEEE 802.3 length
/// (an LLC frame, SNAP among them) shares "llc". Fixed: a sender can not
/// make the table grow.
pub const LAYER2_SLOTS: [(u16, &str); 12] = [
    (0x8100, "802.1Q tag in a deeper stack"),
    (0x88a8, "802.1ad S-tag in a deeper stack"),
    (0x9100, "QinQ (0x9100)"),
    (0x9200, "QinQ (0x9200)"),
    (0x8863, "PPPoE discovery"),
    (0x8864, "PPPoE session"),
    (0x8847, "MPLS"),
    (0x8848, "MPLS multicast"),
    (0x88cc, "LLDP"),
    (0x888e, "EAPOL"),
    (0x88e5, "MACsec"),
    (0x8035, "RARP"),
];

/// Slots of [`Layer2Drops`]: the named EtherTypes, "llc", "other".
const SLOTS: usize = LAYER2_SLOTS.len() + 2;
const LLC: usize = LAYER2_SLOTS.len();
const OTHER: usize = LAYER2_SLOTS.len() + 1;

/// Frames dropped for their layer 2, by EtherType.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layer2Drops {
    counts: [u64; SLOTS],
}

/// One counter of [`Layer2Drops`]: its key for scripts (`"0x9100"`,
/// `"llc"`, `"other"`), a name for people, and the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer2Count {
    /// `"0x"` and four hex digits, `"llc"` or `"other"`.
    pub key: &'static str,
    /// What the EtherType is.
    pub name: &'static str,
    /// Frames dropped.
    pub frames: u64,
}

/// The keys of the slots, in slot order.
const KEYS: [&str; SLOTS] = [
    "0x8100", "0x88a8", "0x9100", "0x9200", "0x8863", "0x8864", "0x8847", "0x8848", "0x88cc",
    "0x888e", "0x88e5", "0x8035", "llc", "other",
];

impl Layer2Drops {
    fn slot(ethertype: u16) -> usize {
        if ethertype < ETHERTYPE_MIN {
            return LLC;
        }
        LAYER2_SLOTS
            .iter()
            .position(|(t, _)| *t == ethertype)
            .unwrap_or(OTHER)
    }

    /// Counts one frame dropped with `ethertype`.
    #[inline]
    pub fn record(&mut self, ethertype: u16) {
        self.counts[Self::slot(ethertype)] += 1;
    }

    /// Frames counted under the slot `ethertype` falls in.
    pub fn get(&self, ethertype: u16) -> u64 {
        self.counts[Self::slot(ethertype)]
    }

    /// Every counter, zero or not, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = Layer2Count> + '_ {
        self.counts.iter().enumerate().map(|(i, &frames)| {
            let name = match i {
                LLC => "802.3 length (LLC, SNAP)",
                OTHER => "other",
                _ => LAYER2_SLOTS[i].1,
            };
            Layer2Count {
                key: KEYS[i],
                name,
                frames,
            }
        })
    }

    /// Adds another table.
    pub fn merge(&mut self, other: &Layer2Drops) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_slots() {
        for (i, (t, _)) in LAYER2_SLOTS.iter().enumerate() {
            assert_eq!(KEYS[i], format!("0x{t:04x}"));
        }
    }

    #[test]
    fn counts_fall_in_fixed_slots() {
        let mut d = Layer2Drops::default();
        for t in [0x9100, 0x8864, 0x002e, 0x05dc, 0x1234, 0xffff, 0x9100] {
            d.record(t);
        }
        assert_eq!(d.get(0x9100), 2);
        assert_eq!(d.get(0x8864), 1);
        assert_eq!(d.get(0x0000), 2, "both lengths under llc");
        assert_eq!(d.get(0xabcd), 2, "unknown ones share other");
        assert_eq!(d.iter().count(), SLOTS);
        let mut total = Layer2Drops::default();
        total.merge(&d);
        total.merge(&d);
        assert_eq!(total.iter().map(|c| c.frames).sum::<u64>(), 14);
    }

    #[test]
    fn arp_passes_and_the_rest_only_when_allowed() {
        let strict = Layer2Policy::default();
        assert!(strict.passes(ETHERTYPE_ARP));
        assert!(!strict.passes(0x88cc));
        let lldp = Layer2Policy {
            pass_unknown: false,
            allow: vec![0x88cc],
        };
        assert!(lldp.passes(0x88cc) && !lldp.passes(0x8864));
        let open = Layer2Policy {
            pass_unknown: true,
            allow: Vec::new(),
        };
        assert!(open.passes(0x8864));
    }
}
