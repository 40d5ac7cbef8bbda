//! ESP (RFC 4303 2) and UDP encapsulation of ESP (RFC 3948 2) on the wire.

/// Length of the ESP header: SPI and sequence number (RFC 4303 2).
pub const ESP_HEADER_LEN: usize = 8;
/// Length of the ESP trailer's fixed part: pad length and next header.
pub const ESP_TRAILER_LEN: usize = 2;
/// Length of a UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// The IANA port for UDP-encapsulated ESP and IKE (RFC 3948 2).
pub const NAT_T_PORT: u16 = 4500;

/// A read-only view of an ESP header at the start of `buf`.
#[derive(Debug, Clone, Copy)]
pub struct EspHeader<'a> {
    buf: &'a [u8],
}

impl<'a> EspHeader<'a> {
    /// The view, if `buf` holds at least an ESP header.
    pub fn new_checked(buf: &'a [u8]) -> Option<Self> {
        (buf.len() >= ESP_HEADER_LEN).then_some(EspHeader { buf })
    }

    /// Security Parameters Index.
    pub fn spi(&self) -> u32 {
        u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
    }

    /// Sequence Number (the low 32 bits with ESN).
    pub fn seq(&self) -> u32 {
        u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
    }
}

/// Writes an ESP header.
pub fn emit_esp_header(out: &mut [u8], spi: u32, seq_low: u32) {
    out[0..4].copy_from_slice(&spi.to_be_bytes());
    out[4..8].copy_from_slice(&seq_low.to_be_bytes());
}

/// What the payload of a UDP datagram on an ESP-in-UDP port is
/// (RFC 3948 2.1, 2.2, 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpEncapKind {
    /// A NAT-keepalive packet: the single byte 0xFF (RFC 3948 2.3).
    Keepalive,
    /// The non-ESP marker (four zero bytes): an IKE message (RFC 3948 2.2).
    Ike,
    /// An ESP packet (RFC 3948 2.1).
    Esp,
    /// Too short to be any of them.
    Invalid,
}

/// Classifies the payload of a UDP datagram received on an ESP-in-UDP port.
pub fn classify_udp_encap(payload: &[u8]) -> UdpEncapKind {
    match payload {
        [0xff] => UdpEncapKind::Keepalive,
        [0, 0, 0, 0, ..] => UdpEncapKind::Ike,
        p if p.len() >= ESP_HEADER_LEN => UdpEncapKind::Esp,
        _ => UdpEncapKind::Invalid,
    }
}

/// Writes a UDP header for ESP-in-UDP. The checksum is zero, as RFC 3948
/// 2.1 says a sender SHOULD do for IPv4; for IPv6 see
/// [`udp_checksum`].
pub fn emit_udp_header(out: &mut [u8], src_port: u16, dst_port: u16, len: u16) {
    out[0..2].copy_from_slice(&src_port.to_be_bytes());
    out[2..4].copy_from_slice(&dst_port.to_be_bytes());
    out[4..6].copy_from_slice(&len.to_be_bytes());
    out[6..8].copy_from_slice(&[0, 0]);
}

/// The UDP checksum of `udp` (header with zero checksum field, and payload)
/// between `src` and `dst`; zero is sent as 0xffff (RFC 768, RFC 8200 8.1).
pub fn udp_checksum(src: &[u8], dst: &[u8], udp: &[u8]) -> u16 {
    let len = u32::try_from(udp.len()).unwrap_or(u32::MAX);
    let acc = crate::checksum::pseudo_header(src, dst, 17, len);
    match crate::checksum::finish(crate::checksum::sum(acc, udp)) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_header_fields() {
        let b = [0, 0, 0x10, 0x01, 0, 0, 0, 7, 0xaa];
        let h = EspHeader::new_checked(&b).unwrap();
        assert_eq!((h.spi(), h.seq()), (0x1001, 7));
        assert!(EspHeader::new_checked(&b[..7]).is_none());
        let mut out = [0u8; 8];
        emit_esp_header(&mut out, 0x1001, 7);
        assert_eq!(out, b[..8]);
    }

    #[test]
    fn udp_encap_classification() {
        assert_eq!(classify_udp_encap(&[0xff]), UdpEncapKind::Keepalive);
        assert_eq!(classify_udp_encap(&[0, 0, 0, 0, 1]), UdpEncapKind::Ike);
        assert_eq!(
            classify_udp_encap(&[0, 0, 1, 0, 0, 0, 0, 1]),
            UdpEncapKind::Esp
        );
        assert_eq!(classify_udp_encap(&[0, 0, 1]), UdpEncapKind::Invalid);
        assert_eq!(classify_udp_encap(&[]), UdpEncapKind::Invalid);
    }
}
