//! Ethernet II framing (IEEE 802.3), as far as a bump in the wire needs it:
//! where the IP packet starts, and the header to put back around it.

/// Length of an Ethernet II header without VLAN tags.
pub const HEADER_LEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

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
/// where it came from).
pub fn swap_macs(header: &mut [u8; HEADER_LEN]) {
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
}
