//! Ethernet II framing (IEEE 802.3), as far as a bump in the wire needs it:
//! where the IP packet starts, through up to two VLAN tags (IEEE 802.1Q
//! C-tags, an IEEE 802.1ad S-tag in front of one), and the header to put
//! back around it.

/// Length of an Ethernet II header without VLAN tags.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID and TCI, IEEE 802.1Q 9.6).
pub const VLAN_TAG_LEN: usize = 4;
/// Length of the longest header [`Layer2::parse`] accepts: an S-tag and a
/// C-tag.
pub const MAX_HEADER_LEN: usize = HEADER_LEN + 2 * VLAN_TAG_LEN;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Tag protocol identifier of an IEEE 802.1Q customer VLAN tag (C-tag).
pub const TPID_CTAG: u16 = 0x8100;
/// Tag protocol identifier of an IEEE 802.1ad service VLAN tag (S-tag,
/// the outer tag of "QinQ").
pub const TPID_STAG: u16 = 0x88a8;
/// Below this, the EtherType field of an IEEE 802.3 frame is a length
/// (an LLC frame, SNAP among them), not an EtherType.
pub const ETHERTYPE_MIN: u16 = 0x0600;

/// Where the payload of an Ethernet frame starts and what it is, after
/// the VLAN tags bitsgw understands: none; one C-tag (`0x8100`); one
/// S-tag (`0x88a8`); an S-tag followed by a C-tag (IEEE 802.1ad QinQ).
/// Any other stacking (a C-tag after a C-tag, an S-tag after a tag, the
/// pre-standard `0x9100`) stops the walk there: its TPID is reported as
/// the EtherType, so it is not mistaken for IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer2 {
    /// Octets before the payload: 14, 18 or 22.
    pub header_len: usize,
    /// The EtherType found after the tags (or the length field of an
    /// IEEE 802.3 frame, below [`ETHERTYPE_MIN`]).
    pub ethertype: u16,
}

impl Layer2 {
    /// Walks the tags of `frame`. `None` if the frame ends before its
    /// innermost EtherType.
    #[inline]
    pub fn parse(frame: &[u8]) -> Option<Layer2> {
        let outer = ethertype(frame)?;
        if outer != TPID_CTAG && outer != TPID_STAG {
            return Some(Layer2 {
                header_len: HEADER_LEN,
                ethertype: outer,
            });
        }
        let at = |off: usize| {
            frame
                .get(off..off + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let second = at(HEADER_LEN + 2)?;
        if outer == TPID_STAG && second == TPID_CTAG {
            return Some(Layer2 {
                header_len: MAX_HEADER_LEN,
                ethertype: at(MAX_HEADER_LEN - 2)?,
            });
        }
        Some(Layer2 {
            header_len: HEADER_LEN + VLAN_TAG_LEN,
            ethertype: second,
        })
    }

    /// Whether the payload is an IPv4 or IPv6 packet.
    #[inline]
    pub fn is_ip(&self) -> bool {
        self.ethertype == ETHERTYPE_IPV4 || self.ethertype == ETHERTYPE_IPV6
    }

    /// Whether the frame has VLAN tags.
    #[inline]
    pub fn is_tagged(&self) -> bool {
        self.header_len > HEADER_LEN
    }
}

/// A copy of a frame's Ethernet header, VLAN tags included, to put back
/// around the packet that leaves in its place. Fixed size: no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl Default for SavedHeader {
    /// An all-zero untagged header.
    fn default() -> Self {
        SavedHeader {
            bytes: [0; MAX_HEADER_LEN],
            len: HEADER_LEN as u8,
        }
    }
}

impl SavedHeader {
    /// Copies the header of `frame` as far as `layer2` found it.
    /// `None` if the frame is shorter or the length is not one of 14, 18
    /// and 22.
    #[inline]
    pub fn copy_from(frame: &[u8], layer2: &Layer2) -> Option<SavedHeader> {
        let len = layer2.header_len;
        if !matches!(len, 14 | 18 | 22) {
            return None;
        }
        let mut bytes = [0; MAX_HEADER_LEN];
        bytes[..len].copy_from_slice(frame.get(..len)?);
        Some(SavedHeader {
            bytes,
            len: len as u8,
        })
    }

    /// The header's length.
    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Never: a header has at least its MAC addresses and EtherType.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The header as saved.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len()]
    }

    /// Swaps source and destination MAC addresses (for a frame sent back
    /// where it came from); tags stay.
    pub fn swap_macs(&mut self) {
        swap_macs(&mut self.bytes);
    }

    /// Writes the header into `out` (exactly [`SavedHeader::len`] octets)
    /// with `ethertype` as its innermost EtherType, after the tags: an
    /// IPv4 packet may leave as IPv6 ESP and the other way round.
    #[inline]
    pub fn emit(&self, out: &mut [u8], ethertype: u16) {
        let len = self.len();
        out[..len - 2].copy_from_slice(&self.bytes[..len - 2]);
        out[len - 2..len].copy_from_slice(&ethertype.to_be_bytes());
    }
}

/// What the frames of a port start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// Ethernet II frames.
    Ethernet,
    /// Raw IPv4 or IPv6 packets (TUN devices, raw-IP captures).
    RawIp,
}

/// The EtherType of a frame, if it has a whole header.
pub fn ethertype(frame: &[u8]) -> Option<u16> {
    frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// The EtherType for an IP packet of the version in its first nibble.
pub fn ethertype_for(ip: &[u8]) -> Option<u16> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => Some(ETHERTYPE_IPV4),
        Some(6) => Some(ETHERTYPE_IPV6),
        _ => None,
    }
}

/// Swaps source and destination MAC addresses (for a frame sent back
/// where it came from). `header` holds at least the two addresses.
pub fn swap_macs(header: &mut [u8]) {
    for i in 0..6 {
        header.swap(i, i + 6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethertypes_and_swap() {
        let mut h = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x86, 0xdd];
        assert_eq!(ethertype(&h), Some(ETHERTYPE_IPV6));
        assert_eq!(ethertype(&h[..13]), None);
        swap_macs(&mut h);
        assert_eq!(&h[..12], &[7, 8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6]);
        assert_eq!(ethertype_for(&[0x45]), Some(ETHERTYPE_IPV4));
        assert_eq!(ethertype_for(&[0x60]), Some(ETHERTYPE_IPV6));
        assert_eq!(ethertype_for(&[0x10]), None);
    }

    const MACS: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn frame(after_macs: &[u8]) -> Vec<u8> {
        let mut f = MACS.to_vec();
        f.extend_from_slice(after_macs);
        f.extend_from_slice(&[0x45, 0, 0, 20]);
        f
    }

    #[test]
    fn tags_are_walked_to_the_inner_ethertype() {
        // After the MACs; header length and EtherType the walk finds.
        type Case<'a> = (&'a [u8], Option<(usize, u16)>);
        let cases: &[Case] = &[
            (&[0x08, 0x00], Some((14, ETHERTYPE_IPV4))),
            (&[0x81, 0x00, 0, 7, 0x86, 0xdd], Some((18, ETHERTYPE_IPV6))),
            (&[0x88, 0xa8, 0, 5, 0x08, 0x00], Some((18, ETHERTYPE_IPV4))),
            (
                &[0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 7, 0x08, 0x00],
                Some((22, ETHERTYPE_IPV4)),
            ),
            (&[0x81, 0x00, 0, 7, 0x08, 0x06], Some((18, ETHERTYPE_ARP))),
            // Stacks bitsgw does not walk stop at the unexpected TPID.
            (
                &[0x81, 0x00, 0, 7, 0x81, 0x00, 0, 9, 0x08, 0x00],
                Some((18, TPID_CTAG)),
            ),
            (
                &[0x81, 0x00, 0, 7, 0x88, 0xa8, 0, 9, 0x08, 0x00],
                Some((18, TPID_STAG)),
            ),
            (
                &[
                    0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 7, 0x81, 0x00, 0, 9, 0x08, 0x00,
                ],
                Some((22, TPID_CTAG)),
            ),
            (&[0x91, 0x00, 0, 7, 0x08, 0x00], Some((14, 0x9100))),
            (&[0x00, 0x2e, 0xaa, 0xaa, 0x03], Some((14, 0x002e))),
        ];
        for (after, want) in cases {
            let f = frame(after);
            let got = Layer2::parse(&f).map(|l| (l.header_len, l.ethertype));
            assert_eq!(got, *want, "{after:02x?}");
        }
        let qinq = frame(&[0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 7, 0x08, 0x00]);
        assert!(Layer2::parse(&qinq).is_some_and(|l| l.is_ip() && l.is_tagged()));
    }

    #[test]
    fn truncated_tags_are_refused_at_every_length() {
        let qinq = frame(&[0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 7, 0x08, 0x00]);
        for n in 0..qinq.len() {
            let want = n >= MAX_HEADER_LEN;
            assert_eq!(Layer2::parse(&qinq[..n]).is_some(), want, "{n} octets");
        }
    }

    #[test]
    fn a_saved_header_keeps_its_tags_and_rewrites_the_inner_ethertype() {
        let f = frame(&[0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 7, 0x08, 0x00]);
        let l2 = Layer2::parse(&f).unwrap();
        let mut saved = SavedHeader::copy_from(&f, &l2).unwrap();
        assert_eq!(saved.as_bytes(), &f[..22]);
        let mut out = [0u8; 22];
        saved.emit(&mut out, ETHERTYPE_IPV6);
        assert_eq!(&out[..20], &f[..20]);
        assert_eq!(&out[20..], &[0x86, 0xdd]);
        saved.swap_macs();
        assert_eq!(
            &saved.as_bytes()[..12],
            &[7, 8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6]
        );
        assert_eq!(&saved.as_bytes()[12..], &f[12..22]);
        let short = Layer2 {
            header_len: 22,
            ethertype: ETHERTYPE_IPV4,
        };
        assert_eq!(SavedHeader::copy_from(&f[..21], &short), None);
    }
}
