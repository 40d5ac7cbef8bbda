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

/// Where a received packet's ESP is, if it has any: the one place that
/// decides it, for dispatch, the IPsec stage and the mobility tunnel stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspAt {
    /// An ESP header at this offset of the IP packet; `udp` when it is
    /// UDP-encapsulated (RFC 3948 2.1).
    Esp {
        /// Offset of the ESP header.
        offset: usize,
        /// Whether a UDP header precedes it.
        udp: bool,
    },
    /// A NAT-keepalive on an ESP-in-UDP port (RFC 3948 2.3).
    Keepalive,
    /// An IKE message behind the non-ESP marker (RFC 3948 2.2).
    Ike,
    /// A datagram on an ESP-in-UDP port that is none of them.
    Invalid,
    /// Not ESP: another protocol, UDP on another port, or a fragment
    /// other than the first (only the first carries the ESP header,
    /// RFC 8200 4.5, RFC 791).
    NotEsp,
}

/// Where the ESP of `pkt` (parsed as `meta`) is, with UDP datagrams to one
/// of `udp_encap_ports` taken as ESP in UDP (RFC 3948).
pub fn locate_esp(pkt: &[u8], meta: &crate::ip::IpMeta, udp_encap_ports: &[u16]) -> EspAt {
    if meta.is_later_fragment() {
        return EspAt::NotEsp;
    }
    match meta.proto {
        crate::proto::ESP => EspAt::Esp {
            offset: meta.header_len,
            udp: false,
        },
        crate::proto::UDP => {
            let Some(udp) = pkt.get(meta.header_len..meta.header_len + UDP_HEADER_LEN) else {
                return EspAt::NotEsp;
            };
            let dport = u16::from_be_bytes([udp[2], udp[3]]);
            if !udp_encap_ports.contains(&dport) {
                return EspAt::NotEsp;
            }
            let payload = pkt.get(meta.header_len + UDP_HEADER_LEN..).unwrap_or(&[]);
            match classify_udp_encap(payload) {
                UdpEncapKind::Keepalive => EspAt::Keepalive,
                UdpEncapKind::Ike => EspAt::Ike,
                UdpEncapKind::Esp => EspAt::Esp {
                    offset: meta.header_len + UDP_HEADER_LEN,
                    udp: true,
                },
                UdpEncapKind::Invalid => EspAt::Invalid,
            }
        }
        _ => EspAt::NotEsp,
    }
}

/// The SPI of `pkt`'s ESP header, if it has one ([`locate_esp`]).
pub fn esp_spi(pkt: &[u8], meta: &crate::ip::IpMeta, udp_encap_ports: &[u16]) -> Option<u32> {
    match locate_esp(pkt, meta, udp_encap_ports) {
        EspAt::Esp { offset, .. } => pkt
            .get(offset..)
            .and_then(EspHeader::new_checked)
            .map(|h| h.spi()),
        _ => None,
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
    let acc = crate::checksum::pseudo_header(src, dst, crate::proto::UDP, len);
    match crate::checksum::finish(crate::checksum::sum(acc, udp)) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One function finds every received packet's ESP: plain, in UDP on an
    /// encapsulation port, never on another port, never in a fragment
    /// other than the first; keepalives, IKE and runts on the port told
    /// apart (RFC 3948 2).
    #[test]
    fn esp_is_located_in_one_place() {
        use crate::craft::ip_packet;
        use crate::ip;
        use std::net::IpAddr;
        let a: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "198.51.100.2".parse().unwrap_or(IpAddr::from([0; 4]));
        let esp = [0, 0, 0x10, 0x01, 0, 0, 0, 7, 0xaa, 0xbb];
        let at = |pkt: &[u8], ports: &[u16]| {
            let meta = ip::parse(pkt).ok()?;
            Some((locate_esp(pkt, &meta, ports), esp_spi(pkt, &meta, ports)))
        };
        let plain = ip_packet(a, b, crate::proto::ESP, &esp, false);
        assert_eq!(
            at(&plain, &[]),
            Some((
                EspAt::Esp {
                    offset: 20,
                    udp: false
                },
                Some(0x1001)
            ))
        );
        let udp = |dport: u16, payload: &[u8]| {
            let mut u = vec![0x11, 0x94, (dport >> 8) as u8, dport as u8, 0, 0, 0, 0];
            u.extend_from_slice(payload);
            let len = u.len() as u16;
            u[4..6].copy_from_slice(&len.to_be_bytes());
            ip_packet(a, b, crate::proto::UDP, &u, false)
        };
        assert_eq!(
            at(&udp(4500, &esp), &[4500]),
            Some((
                EspAt::Esp {
                    offset: 28,
                    udp: true
                },
                Some(0x1001)
            ))
        );
        assert_eq!(at(&udp(4500, &esp), &[]), Some((EspAt::NotEsp, None)));
        assert_eq!(at(&udp(4501, &esp), &[4500]), Some((EspAt::NotEsp, None)));
        assert_eq!(
            at(&udp(4500, &[0xff]), &[4500]),
            Some((EspAt::Keepalive, None))
        );
        assert_eq!(
            at(&udp(4500, &[0, 0, 0, 0, 1]), &[4500]),
            Some((EspAt::Ike, None))
        );
        assert_eq!(
            at(&udp(4500, &[1, 2, 3]), &[4500]),
            Some((EspAt::Invalid, None))
        );
        // A later IPv4 fragment of an ESP packet: its first bytes are data.
        let mut later = plain.clone();
        later[6..8].copy_from_slice(&1u16.to_be_bytes());
        ip::ipv4_fill_checksum(&mut later);
        assert_eq!(at(&later, &[]), Some((EspAt::NotEsp, None)));
        // And an IPv6 one, behind a Fragment header (offset 8 octets).
        let a6: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0; 16]));
        let b6: IpAddr = "2001:db8::2".parse().unwrap_or(IpAddr::from([0; 16]));
        let mut frag = vec![crate::proto::ESP, 0, 0, 8, 0, 0, 0, 9];
        frag.extend_from_slice(&esp);
        let later6 = ip_packet(a6, b6, crate::proto::IPV6_FRAGMENT, &frag, false);
        assert_eq!(at(&later6, &[]), Some((EspAt::NotEsp, None)));
        // The first fragment has the header.
        frag[3] = 1;
        let first6 = ip_packet(a6, b6, crate::proto::IPV6_FRAGMENT, &frag, false);
        assert_eq!(at(&first6, &[]).map(|(_, spi)| spi), Some(Some(0x1001)));
    }

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
