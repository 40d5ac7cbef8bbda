//! IKEv2 wire formats (RFC 7296 section 3): the fixed IKE header as a
//! smoltcp-style view, the generic payload chain, and a `Repr` for every
//! payload the exchanges use. Parsing never panics on any input; emitting
//! writes into a caller's buffer of at least `buffer_len()` octets.

mod header;
mod payload;
mod sa;
mod ts;

pub use header::{ExchangeType, Flags, Header, HeaderRepr, HEADER_LEN};
pub(crate) use payload::spi32;
pub use payload::{
    AuthPayload, CertPayload, DeletePayload, IdPayload, IdType, KePayload, NotifyPayload,
    NotifyType, Payload, PayloadIter, PayloadType, RawPayload, SkPayload, GENERIC_HEADER_LEN,
};
pub use sa::{Attribute, Proposal, ProtocolId, SaPayload, Transform, TransformType};
pub use ts::{TrafficSelector, TsType};

/// Why a message or payload could not be parsed or emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer octets than the structure's fixed part or its length field.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A length field smaller than the structure's fixed part, or one that
    /// disagrees with its container.
    #[error("bad length in {0}")]
    BadLength(&'static str),
    /// A major version other than 2 (RFC 7296 3.1).
    #[error("IKE major version {0} is not 2")]
    BadMajorVersion(u8),
    /// A field has a value the RFC forbids.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// An unknown payload with the critical bit set (RFC 7296 2.5).
    #[error("unsupported critical payload type {0}")]
    UnsupportedCritical(u8),
    /// The output buffer is smaller than `buffer_len()`.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// A whole IKE message: the header and its (plaintext) payload chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header; `next_payload` and `length` are set by [`Message::emit`].
    pub header: HeaderRepr,
    /// The payloads in order.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Parses a message: the header and every payload of the outer chain.
    /// An SK payload stays encrypted ([`Payload::Sk`]).
    pub fn parse(bytes: &[u8]) -> Result<Message, WireError> {
        let header = Header::new_checked(bytes)?;
        let repr = HeaderRepr::parse(&header)?;
        let body = &bytes[HEADER_LEN..repr.length as usize];
        let payloads = parse_chain(repr.next_payload, body)?;
        Ok(Message {
            header: repr,
            payloads,
        })
    }

    /// Octets [`Message::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + chain_len(&self.payloads)
    }

    /// Writes the message into `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        if buf.len() < len {
            return Err(WireError::BufferTooSmall);
        }
        let length = u32::try_from(len).map_err(|_| WireError::BadLength("message"))?;
        let mut header = self.header;
        header.next_payload = self
            .payloads
            .first()
            .map_or(PayloadType::NoNext, Payload::kind);
        header.length = length;
        header.emit(&mut Header::new_unchecked(&mut buf[..HEADER_LEN]));
        emit_chain(&self.payloads, &mut buf[HEADER_LEN..len])?;
        Ok(len)
    }

    /// The message as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut out = vec![0; self.buffer_len()];
        self.emit(&mut out)?;
        Ok(out)
    }
}

/// Parses a payload chain starting with type `first` that fills `body`
/// exactly. An SK payload ends the chain (RFC 7296 3.14: its Next Payload
/// names the first payload inside it).
pub fn parse_chain(first: PayloadType, body: &[u8]) -> Result<Vec<Payload>, WireError> {
    let mut out = Vec::new();
    for raw in PayloadIter::new(first, body) {
        out.push(Payload::parse(&raw?)?);
    }
    Ok(out)
}

/// Octets of a payload chain.
pub fn chain_len(payloads: &[Payload]) -> usize {
    payloads
        .iter()
        .map(|p| GENERIC_HEADER_LEN + p.body_len())
        .sum()
}

/// Writes a payload chain into `buf` (at least [`chain_len`] octets).
pub fn emit_chain(payloads: &[Payload], buf: &mut [u8]) -> Result<usize, WireError> {
    let total = chain_len(payloads);
    if buf.len() < total {
        return Err(WireError::BufferTooSmall);
    }
    let mut at = 0;
    for (i, p) in payloads.iter().enumerate() {
        let next = match p {
            // The SK payload's Next Payload is its first inner payload.
            Payload::Sk(sk) => sk.first_inner,
            _ => payloads
                .get(i + 1)
                .map_or(PayloadType::NoNext, Payload::kind),
        };
        let len = GENERIC_HEADER_LEN + p.body_len();
        let len16 = u16::try_from(len).map_err(|_| WireError::BadLength("payload"))?;
        buf[at] = next.into();
        buf[at + 1] = 0;
        buf[at + 2..at + 4].copy_from_slice(&len16.to_be_bytes());
        p.emit_body(&mut buf[at + GENERIC_HEADER_LEN..at + len]);
        at += len;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IKE_SA_INIT request strongSwan 5.9.8's charon sent in the
    /// interoperability test (proposal `aes128gcm16-prfsha256-ecp256`):
    /// SA, KE (group 19), Ni, NAT_DETECTION_SOURCE_IP,
    /// NAT_DETECTION_DESTINATION_IP, IKEV2_FRAGMENTATION_SUPPORTED,
    /// SIGNATURE_HASH_ALGORITHMS, REDIRECT_SUPPORTED.
    const STRONGSWAN_INIT: [u8; 264] = [
        0x3f, 0x80, 0x44, 0xb3, 0xd0, 0x03, 0x2d, 0xa3, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x21, 0x20, 0x22, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x22, 0x00,
        0x00, 0x28, 0x00, 0x00, 0x00, 0x24, 0x01, 0x01, 0x00, 0x03, 0x03, 0x00, 0x00, 0x0c, 0x01,
        0x00, 0x00, 0x14, 0x80, 0x0e, 0x00, 0x80, 0x03, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x05,
        0x00, 0x00, 0x00, 0x08, 0x04, 0x00, 0x00, 0x13, 0x28, 0x00, 0x00, 0x48, 0x00, 0x13, 0x00,
        0x00, 0x21, 0x3d, 0x12, 0x19, 0x89, 0xd6, 0x20, 0x13, 0x84, 0xee, 0x2f, 0x75, 0x60, 0x6a,
        0x2d, 0x36, 0xe5, 0xb9, 0xda, 0x23, 0x88, 0xdb, 0xa3, 0xe3, 0xec, 0xaa, 0xdf, 0x6a, 0xa2,
        0x11, 0x10, 0x26, 0xba, 0x91, 0xd7, 0xaa, 0x51, 0x02, 0x63, 0xff, 0xa5, 0x36, 0xca, 0x26,
        0xfb, 0xb1, 0x8f, 0xab, 0x95, 0x53, 0xc2, 0x20, 0x5e, 0x0f, 0xc3, 0xc8, 0x84, 0x08, 0x61,
        0xbf, 0xd3, 0x1a, 0x89, 0xb9, 0x29, 0x00, 0x00, 0x24, 0xfe, 0x88, 0xa1, 0x16, 0x72, 0x08,
        0x8b, 0x7f, 0xf4, 0xe4, 0xcf, 0xbb, 0x4f, 0x21, 0xa2, 0xd5, 0xee, 0x86, 0xa3, 0xbf, 0x59,
        0xd1, 0xba, 0x70, 0x49, 0x69, 0x94, 0xb4, 0x3b, 0x9d, 0x89, 0x20, 0x29, 0x00, 0x00, 0x1c,
        0x00, 0x00, 0x40, 0x04, 0x2c, 0x9f, 0xb7, 0x18, 0x95, 0x9f, 0xa6, 0xe2, 0xb8, 0x70, 0x6e,
        0x29, 0x78, 0x1f, 0xc9, 0xfb, 0x5c, 0x30, 0xf4, 0xf1, 0x29, 0x00, 0x00, 0x1c, 0x00, 0x00,
        0x40, 0x05, 0x35, 0xd3, 0xfa, 0x8e, 0xc4, 0xc2, 0x3e, 0x79, 0xf0, 0x32, 0xff, 0x7d, 0x25,
        0xa7, 0x12, 0x28, 0x50, 0x19, 0x78, 0x74, 0x29, 0x00, 0x00, 0x08, 0x00, 0x00, 0x40, 0x2e,
        0x29, 0x00, 0x00, 0x10, 0x00, 0x00, 0x40, 0x2f, 0x00, 0x02, 0x00, 0x03, 0x00, 0x04, 0x00,
        0x05, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x40, 0x16,
    ];

    #[test]
    fn parses_and_emits_a_strongswan_ike_sa_init_request() {
        let m = Message::parse(&STRONGSWAN_INIT).unwrap();
        assert_eq!(m.header.spi_i, 0x3f80_44b3_d003_2da3);
        assert_eq!(m.header.spi_r, 0);
        assert_eq!(m.header.exchange, ExchangeType::IkeSaInit);
        assert!(m.header.flags.initiator() && !m.header.flags.response());
        let kinds: Vec<PayloadType> = m.payloads.iter().map(Payload::kind).collect();
        assert_eq!(
            kinds[..3],
            [PayloadType::Sa, PayloadType::Ke, PayloadType::Nonce]
        );
        let notifies: Vec<u16> = m
            .payloads
            .iter()
            .filter_map(|p| match p {
                Payload::Notify(n) => Some(u16::from(n.notify_type)),
                _ => None,
            })
            .collect();
        assert_eq!(notifies, [16388, 16389, 16430, 16431, 16406]);
        match &m.payloads[1] {
            Payload::Ke(ke) => assert_eq!((ke.group, ke.data.len()), (19, 64)),
            p => panic!("{p:?}"),
        }
        match &m.payloads[2] {
            Payload::Nonce(n) => assert_eq!(n.len(), 32),
            p => panic!("{p:?}"),
        }
        assert_eq!(m.to_vec().unwrap(), STRONGSWAN_INIT);
        // Truncated anywhere, it is refused without a panic.
        for n in 0..STRONGSWAN_INIT.len() {
            assert!(Message::parse(&STRONGSWAN_INIT[..n]).is_err());
        }
    }

    proptest::proptest! {
        /// Whatever parses emits again to a message that parses the same;
        /// starting from strongSwan's request with random octets changed
        /// reaches deep into the payload parsers.
        #[test]
        fn what_parses_round_trips(
            flips in proptest::collection::vec((0usize..264, proptest::prelude::any::<u8>()), 0..6),
            cut in 0usize..300,
        ) {
            let mut m = STRONGSWAN_INIT.to_vec();
            for (at, x) in flips {
                m[at] ^= x;
            }
            m.truncate(cut.max(1));
            if let Ok(msg) = Message::parse(&m) {
                let out = msg.to_vec().unwrap();
                proptest::prop_assert_eq!(Message::parse(&out).unwrap(), msg);
            }
        }
    }
}
