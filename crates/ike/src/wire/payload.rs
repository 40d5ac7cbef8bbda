//! The generic payload header and chain (RFC 7296 3.2) and the payloads
//! other than SA and TS: KE (3.4), IDi/IDr (3.5), AUTH (3.8), Nonce (3.9),
//! Notify (3.10), Delete (3.11), Vendor ID (3.12) and SK (3.14). CERT,
//! CERTREQ and any other payload are kept as opaque bytes.

use super::header::{read_u16, read_u32};
use super::{SaPayload, TrafficSelector, WireError};

/// Octets of the generic payload header.
pub const GENERIC_HEADER_LEN: usize = 4;

/// Payload types (RFC 7296 3.2); others round-trip as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PayloadType {
    /// No next payload (0).
    NoNext,
    /// Security Association (33).
    Sa,
    /// Key Exchange (34).
    Ke,
    /// Identification - Initiator (35).
    IdI,
    /// Identification - Responder (36).
    IdR,
    /// Certificate (37).
    Cert,
    /// Certificate Request (38).
    CertReq,
    /// Authentication (39).
    Auth,
    /// Nonce (40).
    Nonce,
    /// Notify (41).
    Notify,
    /// Delete (42).
    Delete,
    /// Vendor ID (43).
    VendorId,
    /// Traffic Selector - Initiator (44).
    TsI,
    /// Traffic Selector - Responder (45).
    TsR,
    /// Encrypted and Authenticated (46).
    Sk,
    /// Any other value.
    Unknown(u8),
}

impl From<u8> for PayloadType {
    fn from(v: u8) -> Self {
        use PayloadType::*;
        match v {
            0 => NoNext,
            33 => Sa,
            34 => Ke,
            35 => IdI,
            36 => IdR,
            37 => Cert,
            38 => CertReq,
            39 => Auth,
            40 => Nonce,
            41 => Notify,
            42 => Delete,
            43 => VendorId,
            44 => TsI,
            45 => TsR,
            46 => Sk,
            v => Unknown(v),
        }
    }
}

impl From<PayloadType> for u8 {
    fn from(v: PayloadType) -> u8 {
        use PayloadType::*;
        match v {
            NoNext => 0,
            Sa => 33,
            Ke => 34,
            IdI => 35,
            IdR => 36,
            Cert => 37,
            CertReq => 38,
            Auth => 39,
            Nonce => 40,
            Notify => 41,
            Delete => 42,
            VendorId => 43,
            TsI => 44,
            TsR => 45,
            Sk => 46,
            Unknown(v) => v,
        }
    }
}

/// One payload of a chain, not yet interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPayload<'a> {
    /// This payload's type (from the previous Next Payload field).
    pub kind: PayloadType,
    /// The Next Payload field.
    pub next: PayloadType,
    /// The critical bit.
    pub critical: bool,
    /// The payload after its generic header.
    pub body: &'a [u8],
}

/// Walks a payload chain (RFC 7296 3.2). Yields an error (and then
/// nothing) on a truncated payload or a length that leaves the chain.
#[derive(Debug, Clone)]
pub struct PayloadIter<'a> {
    next: PayloadType,
    rest: &'a [u8],
    failed: bool,
}

impl<'a> PayloadIter<'a> {
    /// A chain whose first payload has type `first` and that fills `body`.
    pub fn new(first: PayloadType, body: &'a [u8]) -> PayloadIter<'a> {
        PayloadIter {
            next: first,
            rest: body,
            failed: false,
        }
    }
}

impl<'a> Iterator for PayloadIter<'a> {
    type Item = Result<RawPayload<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.next == PayloadType::NoNext {
            if self.rest.is_empty() {
                return None;
            }
            self.failed = true;
            return Some(Err(WireError::BadLength("payload chain")));
        }
        let Some(head) = self.rest.get(..GENERIC_HEADER_LEN) else {
            self.failed = true;
            return Some(Err(WireError::Truncated("generic payload header")));
        };
        let len = read_u16(&head[2..]) as usize;
        if len < GENERIC_HEADER_LEN {
            self.failed = true;
            return Some(Err(WireError::BadLength("generic payload header")));
        }
        let Some(whole) = self.rest.get(..len) else {
            self.failed = true;
            return Some(Err(WireError::Truncated("payload")));
        };
        let raw = RawPayload {
            kind: self.next,
            next: head[0].into(),
            critical: head[1] & 0x80 != 0,
            body: &whole[GENERIC_HEADER_LEN..],
        };
        self.rest = &self.rest[len..];
        self.next = raw.next;
        if raw.kind == PayloadType::Sk {
            // RFC 7296 3.14: the SK payload is the last one; its Next
            // Payload names the first payload inside it.
            self.next = PayloadType::NoNext;
            if !self.rest.is_empty() {
                self.failed = true;
                return Some(Err(WireError::Invalid("payload after SK")));
            }
        }
        Some(Ok(raw))
    }
}

/// Key Exchange payload (RFC 7296 3.4).
#[derive(Clone, PartialEq, Eq)]
pub struct KePayload {
    /// The Diffie-Hellman group number.
    pub group: u16,
    /// The public value.
    pub data: Vec<u8>,
}

impl core::fmt::Debug for KePayload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KePayload")
            .field("group", &self.group)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Identification types (RFC 7296 3.5); others round-trip as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdType {
    /// ID_IPV4_ADDR (1).
    Ipv4Addr,
    /// ID_FQDN (2).
    Fqdn,
    /// ID_RFC822_ADDR (3).
    Rfc822Addr,
    /// ID_IPV6_ADDR (5).
    Ipv6Addr,
    /// ID_DER_ASN1_DN (9).
    DerAsn1Dn,
    /// ID_KEY_ID (11).
    KeyId,
    /// Any other value.
    Unknown(u8),
}

impl From<u8> for IdType {
    fn from(v: u8) -> Self {
        match v {
            1 => IdType::Ipv4Addr,
            2 => IdType::Fqdn,
            3 => IdType::Rfc822Addr,
            5 => IdType::Ipv6Addr,
            9 => IdType::DerAsn1Dn,
            11 => IdType::KeyId,
            v => IdType::Unknown(v),
        }
    }
}

impl From<IdType> for u8 {
    fn from(v: IdType) -> u8 {
        match v {
            IdType::Ipv4Addr => 1,
            IdType::Fqdn => 2,
            IdType::Rfc822Addr => 3,
            IdType::Ipv6Addr => 5,
            IdType::DerAsn1Dn => 9,
            IdType::KeyId => 11,
            IdType::Unknown(v) => v,
        }
    }
}

/// Identification payload body (RFC 7296 3.5), the same for IDi and IDr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPayload {
    /// ID type.
    pub id_type: IdType,
    /// Identification data.
    pub data: Vec<u8>,
}

impl IdPayload {
    /// The body after the generic header (RestOfInitIDPayload of 2.15).
    pub fn body(&self) -> Vec<u8> {
        let mut out = vec![0; 4 + self.data.len()];
        out[0] = self.id_type.into();
        out[4..].copy_from_slice(&self.data);
        out
    }
}

/// Authentication payload (RFC 7296 3.8).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthPayload {
    /// Auth method (2: shared key message integrity code).
    pub method: u8,
    /// Authentication data.
    pub data: Vec<u8>,
}

impl core::fmt::Debug for AuthPayload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AuthPayload")
            .field("method", &self.method)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// Certificate payload (RFC 7296 3.6) or Certificate Request payload
/// (3.7): an encoding and its data (for a request with encoding 4, the
/// SHA-1 hashes of the trusted CAs' public keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPayload {
    /// Certificate Encoding (4: X.509 Certificate - Signature).
    pub encoding: u8,
    /// Certificate Data, or the Certification Authority field.
    pub data: Vec<u8>,
}

impl CertPayload {
    fn parse(b: &[u8]) -> Result<CertPayload, WireError> {
        let (&encoding, data) = b
            .split_first()
            .ok_or(WireError::Truncated("CERT payload"))?;
        Ok(CertPayload {
            encoding,
            data: data.to_vec(),
        })
    }

    fn emit(&self, buf: &mut [u8]) {
        buf[0] = self.encoding;
        buf[1..].copy_from_slice(&self.data);
    }
}

/// Notify message types (RFC 7296 3.10.1) this crate acts on; others
/// round-trip as `Unknown`. Values below 16384 are errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotifyType {
    /// UNSUPPORTED_CRITICAL_PAYLOAD (1).
    UnsupportedCriticalPayload,
    /// INVALID_IKE_SPI (4).
    InvalidIkeSpi,
    /// INVALID_MAJOR_VERSION (5).
    InvalidMajorVersion,
    /// INVALID_SYNTAX (7).
    InvalidSyntax,
    /// INVALID_MESSAGE_ID (9).
    InvalidMessageId,
    /// INVALID_SPI (11).
    InvalidSpi,
    /// NO_PROPOSAL_CHOSEN (14).
    NoProposalChosen,
    /// INVALID_KE_PAYLOAD (17).
    InvalidKePayload,
    /// AUTHENTICATION_FAILED (24).
    AuthenticationFailed,
    /// SINGLE_PAIR_REQUIRED (34).
    SinglePairRequired,
    /// NO_ADDITIONAL_SAS (35).
    NoAdditionalSas,
    /// INTERNAL_ADDRESS_FAILURE (36).
    InternalAddressFailure,
    /// FAILED_CP_REQUIRED (37).
    FailedCpRequired,
    /// TS_UNACCEPTABLE (38).
    TsUnacceptable,
    /// INVALID_SELECTORS (39).
    InvalidSelectors,
    /// TEMPORARY_FAILURE (43).
    TemporaryFailure,
    /// CHILD_SA_NOT_FOUND (44).
    ChildSaNotFound,
    /// INITIAL_CONTACT (16384).
    InitialContact,
    /// SET_WINDOW_SIZE (16385).
    SetWindowSize,
    /// ADDITIONAL_TS_POSSIBLE (16386).
    AdditionalTsPossible,
    /// NAT_DETECTION_SOURCE_IP (16388).
    NatDetectionSourceIp,
    /// NAT_DETECTION_DESTINATION_IP (16389).
    NatDetectionDestinationIp,
    /// COOKIE (16390).
    Cookie,
    /// USE_TRANSPORT_MODE (16391).
    UseTransportMode,
    /// REKEY_SA (16393).
    RekeySa,
    /// ESP_TFC_PADDING_NOT_SUPPORTED (16394).
    EspTfcPaddingNotSupported,
    /// NON_FIRST_FRAGMENTS_ALSO (16395).
    NonFirstFragmentsAlso,
    /// SIGNATURE_HASH_ALGORITHMS (16431, RFC 7427 4).
    SignatureHashAlgorithms,
    /// Any other value.
    Unknown(u16),
}

const NOTIFY_NUMBERS: [(NotifyType, u16); 28] = [
    (NotifyType::UnsupportedCriticalPayload, 1),
    (NotifyType::InvalidIkeSpi, 4),
    (NotifyType::InvalidMajorVersion, 5),
    (NotifyType::InvalidSyntax, 7),
    (NotifyType::InvalidMessageId, 9),
    (NotifyType::InvalidSpi, 11),
    (NotifyType::NoProposalChosen, 14),
    (NotifyType::InvalidKePayload, 17),
    (NotifyType::AuthenticationFailed, 24),
    (NotifyType::SinglePairRequired, 34),
    (NotifyType::NoAdditionalSas, 35),
    (NotifyType::InternalAddressFailure, 36),
    (NotifyType::FailedCpRequired, 37),
    (NotifyType::TsUnacceptable, 38),
    (NotifyType::InvalidSelectors, 39),
    (NotifyType::TemporaryFailure, 43),
    (NotifyType::ChildSaNotFound, 44),
    (NotifyType::InitialContact, 16384),
    (NotifyType::SetWindowSize, 16385),
    (NotifyType::AdditionalTsPossible, 16386),
    (NotifyType::NatDetectionSourceIp, 16388),
    (NotifyType::NatDetectionDestinationIp, 16389),
    (NotifyType::Cookie, 16390),
    (NotifyType::UseTransportMode, 16391),
    (NotifyType::RekeySa, 16393),
    (NotifyType::EspTfcPaddingNotSupported, 16394),
    (NotifyType::NonFirstFragmentsAlso, 16395),
    (NotifyType::SignatureHashAlgorithms, 16431),
];

impl From<u16> for NotifyType {
    fn from(v: u16) -> Self {
        NOTIFY_NUMBERS
            .iter()
            .find(|(_, n)| *n == v)
            .map_or(NotifyType::Unknown(v), |(t, _)| *t)
    }
}

impl From<NotifyType> for u16 {
    fn from(v: NotifyType) -> u16 {
        match v {
            NotifyType::Unknown(n) => n,
            t => NOTIFY_NUMBERS
                .iter()
                .find(|(k, _)| *k == t)
                .map_or(0, |(_, n)| *n),
        }
    }
}

impl NotifyType {
    /// Whether this is an error type (below 16384, RFC 7296 3.10.1).
    pub fn is_error(self) -> bool {
        u16::from(self) < 16384
    }
}

/// Notify payload (RFC 7296 3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyPayload {
    /// Protocol ID (0 when not about an SA, 1 IKE, 3 ESP).
    pub protocol_id: u8,
    /// The SPI, if about an SA.
    pub spi: Vec<u8>,
    /// Notify message type.
    pub notify_type: NotifyType,
    /// Notification data.
    pub data: Vec<u8>,
}

impl NotifyPayload {
    /// A notification not about any SA.
    pub fn new(notify_type: NotifyType, data: Vec<u8>) -> NotifyPayload {
        NotifyPayload {
            protocol_id: 0,
            spi: Vec::new(),
            notify_type,
            data,
        }
    }
}

/// Delete payload (RFC 7296 3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletePayload {
    /// Protocol ID: 1 (IKE, no SPIs) or 3 (ESP).
    pub protocol_id: u8,
    /// SPI size: 0 for IKE, 4 for ESP.
    pub spi_size: u8,
    /// The SPIs, each `spi_size` octets.
    pub spis: Vec<Vec<u8>>,
}

/// Encrypted and Authenticated payload (RFC 7296 3.14), still sealed:
/// Initialization Vector, ciphertext (with padding and Pad Length) and
/// Integrity Checksum Data, as one body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkPayload {
    /// The first payload inside (the SK payload's Next Payload field).
    pub first_inner: PayloadType,
    /// IV, ciphertext and ICV.
    pub body: Vec<u8>,
}

/// One payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Security Association.
    Sa(SaPayload),
    /// Key Exchange.
    Ke(KePayload),
    /// Identification - Initiator.
    IdI(IdPayload),
    /// Identification - Responder.
    IdR(IdPayload),
    /// Authentication.
    Auth(AuthPayload),
    /// Certificate.
    Cert(CertPayload),
    /// Certificate Request.
    CertReq(CertPayload),
    /// Nonce data (16 to 256 octets, RFC 7296 3.9).
    Nonce(Vec<u8>),
    /// Notify.
    Notify(NotifyPayload),
    /// Delete.
    Delete(DeletePayload),
    /// Vendor ID.
    VendorId(Vec<u8>),
    /// Traffic Selector - Initiator.
    TsI(Vec<TrafficSelector>),
    /// Traffic Selector - Responder.
    TsR(Vec<TrafficSelector>),
    /// Encrypted and Authenticated, sealed.
    Sk(SkPayload),
    /// Any other payload, uninterpreted (a critical
    /// unknown one is refused by [`Payload::parse`]).
    Other {
        /// Its type.
        kind: PayloadType,
        /// Its body.
        body: Vec<u8>,
    },
}

impl Payload {
    /// Interprets a raw payload (RFC 7296 2.5: an unknown payload with the
    /// critical bit is refused, other unknown ones are kept uninterpreted).
    pub fn parse(raw: &RawPayload<'_>) -> Result<Payload, WireError> {
        let b = raw.body;
        Ok(match raw.kind {
            PayloadType::Sa => Payload::Sa(SaPayload::parse(b)?),
            PayloadType::Ke => {
                if b.len() < 4 {
                    return Err(WireError::Truncated("KE payload"));
                }
                Payload::Ke(KePayload {
                    group: read_u16(b),
                    data: b[4..].to_vec(),
                })
            }
            PayloadType::IdI | PayloadType::IdR => {
                if b.len() < 4 {
                    return Err(WireError::Truncated("ID payload"));
                }
                let id = IdPayload {
                    id_type: b[0].into(),
                    data: b[4..].to_vec(),
                };
                if raw.kind == PayloadType::IdI {
                    Payload::IdI(id)
                } else {
                    Payload::IdR(id)
                }
            }
            PayloadType::Auth => {
                if b.len() < 4 {
                    return Err(WireError::Truncated("AUTH payload"));
                }
                Payload::Auth(AuthPayload {
                    method: b[0],
                    data: b[4..].to_vec(),
                })
            }
            PayloadType::Cert => Payload::Cert(CertPayload::parse(b)?),
            PayloadType::CertReq => Payload::CertReq(CertPayload::parse(b)?),
            PayloadType::Nonce => {
                if !(16..=256).contains(&b.len()) {
                    return Err(WireError::Invalid("nonce length"));
                }
                Payload::Nonce(b.to_vec())
            }
            PayloadType::Notify => {
                if b.len() < 4 {
                    return Err(WireError::Truncated("Notify payload"));
                }
                let spi_size = b[1] as usize;
                let Some(spi) = b.get(4..4 + spi_size) else {
                    return Err(WireError::Truncated("Notify SPI"));
                };
                Payload::Notify(NotifyPayload {
                    protocol_id: b[0],
                    spi: spi.to_vec(),
                    notify_type: read_u16(&b[2..]).into(),
                    data: b[4 + spi_size..].to_vec(),
                })
            }
            PayloadType::Delete => {
                if b.len() < 4 {
                    return Err(WireError::Truncated("Delete payload"));
                }
                let spi_size = b[1] as usize;
                let count = read_u16(&b[2..]) as usize;
                if spi_size.checked_mul(count) != Some(b.len() - 4) {
                    return Err(WireError::BadLength("Delete payload"));
                }
                let spis = if spi_size == 0 {
                    Vec::new()
                } else {
                    b[4..].chunks(spi_size).map(<[u8]>::to_vec).collect()
                };
                Payload::Delete(DeletePayload {
                    protocol_id: b[0],
                    spi_size: b[1],
                    spis,
                })
            }
            PayloadType::VendorId => Payload::VendorId(b.to_vec()),
            PayloadType::TsI => Payload::TsI(TrafficSelector::parse_payload(b)?),
            PayloadType::TsR => Payload::TsR(TrafficSelector::parse_payload(b)?),
            PayloadType::Sk => Payload::Sk(SkPayload {
                first_inner: raw.next,
                body: b.to_vec(),
            }),
            PayloadType::Unknown(t) if raw.critical => {
                return Err(WireError::UnsupportedCritical(t));
            }
            kind => Payload::Other {
                kind,
                body: b.to_vec(),
            },
        })
    }

    /// This payload's type.
    pub fn kind(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::Sa,
            Payload::Ke(_) => PayloadType::Ke,
            Payload::IdI(_) => PayloadType::IdI,
            Payload::IdR(_) => PayloadType::IdR,
            Payload::Auth(_) => PayloadType::Auth,
            Payload::Cert(_) => PayloadType::Cert,
            Payload::CertReq(_) => PayloadType::CertReq,
            Payload::Nonce(_) => PayloadType::Nonce,
            Payload::Notify(_) => PayloadType::Notify,
            Payload::Delete(_) => PayloadType::Delete,
            Payload::VendorId(_) => PayloadType::VendorId,
            Payload::TsI(_) => PayloadType::TsI,
            Payload::TsR(_) => PayloadType::TsR,
            Payload::Sk(_) => PayloadType::Sk,
            Payload::Other { kind, .. } => *kind,
        }
    }

    /// Octets of the body (after the generic header).
    pub fn body_len(&self) -> usize {
        match self {
            Payload::Sa(sa) => sa.buffer_len(),
            Payload::Ke(ke) => 4 + ke.data.len(),
            Payload::IdI(id) | Payload::IdR(id) => 4 + id.data.len(),
            Payload::Auth(a) => 4 + a.data.len(),
            Payload::Cert(c) | Payload::CertReq(c) => 1 + c.data.len(),
            Payload::Nonce(n) | Payload::VendorId(n) => n.len(),
            Payload::Notify(n) => 4 + n.spi.len() + n.data.len(),
            Payload::Delete(d) => 4 + d.spis.iter().map(Vec::len).sum::<usize>(),
            Payload::TsI(ts) | Payload::TsR(ts) => TrafficSelector::payload_len(ts),
            Payload::Sk(sk) => sk.body.len(),
            Payload::Other { body, .. } => body.len(),
        }
    }

    /// Writes the body into `buf` of exactly [`Payload::body_len`] octets.
    pub(crate) fn emit_body(&self, buf: &mut [u8]) {
        match self {
            Payload::Sa(sa) => sa.emit(buf),
            Payload::Ke(ke) => {
                buf[..2].copy_from_slice(&ke.group.to_be_bytes());
                buf[2..4].fill(0);
                buf[4..].copy_from_slice(&ke.data);
            }
            Payload::IdI(id) | Payload::IdR(id) => {
                buf[0] = id.id_type.into();
                buf[1..4].fill(0);
                buf[4..].copy_from_slice(&id.data);
            }
            Payload::Auth(a) => {
                buf[0] = a.method;
                buf[1..4].fill(0);
                buf[4..].copy_from_slice(&a.data);
            }
            Payload::Cert(c) | Payload::CertReq(c) => c.emit(buf),
            Payload::Nonce(n) | Payload::VendorId(n) => buf.copy_from_slice(n),
            Payload::Notify(n) => {
                buf[0] = n.protocol_id;
                // A Notify's SPI is at most 8 octets in every defined use.
                buf[1] = u8::try_from(n.spi.len()).unwrap_or(u8::MAX);
                buf[2..4].copy_from_slice(&u16::from(n.notify_type).to_be_bytes());
                buf[4..4 + n.spi.len()].copy_from_slice(&n.spi);
                buf[4 + n.spi.len()..].copy_from_slice(&n.data);
            }
            Payload::Delete(d) => {
                buf[0] = d.protocol_id;
                buf[1] = d.spi_size;
                let count = u16::try_from(d.spis.len()).unwrap_or(u16::MAX);
                buf[2..4].copy_from_slice(&count.to_be_bytes());
                let mut at = 4;
                for s in &d.spis {
                    buf[at..at + s.len()].copy_from_slice(s);
                    at += s.len();
                }
            }
            Payload::TsI(ts) | Payload::TsR(ts) => TrafficSelector::emit_payload(ts, buf),
            Payload::Sk(sk) => buf.copy_from_slice(&sk.body),
            Payload::Other { body, .. } => buf.copy_from_slice(body),
        }
    }
}

/// The ESP SPI in a 4-octet SPI field.
pub(crate) fn spi32(b: &[u8]) -> Option<u32> {
    (b.len() == 4).then(|| read_u32(b))
}

#[cfg(test)]
mod tests {
    use super::super::{parse_chain, Message};
    use super::*;

    /// Notify NAT_DETECTION_SOURCE_IP (20 octets of SHA-1) followed by a
    /// Vendor ID and an unknown non-critical payload type 99, then a
    /// Delete of two ESP SPIs.
    const CHAIN: [u8; 60] = [
        // Notify, next = Vendor ID (43), length 28
        43, 0, 0, 28, 0, 0, 0x40, 0x04, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
        18, 19, 20, // Vendor ID, next = 99, length 8
        99, 0, 0, 8, 0xde, 0xad, 0xbe, 0xef, // type 99, next = Delete (42), length 8
        42, 0, 0, 8, 1, 2, 3, 4, // Delete ESP, next none, length 16
        0, 0, 0, 16, 3, 4, 0, 2, 0xc0, 0, 0, 1, 0xc0, 0, 0, 2,
    ];

    #[test]
    fn parses_a_chain_and_emits_it_again() {
        let chain = parse_chain(PayloadType::Notify, &CHAIN).unwrap();
        assert_eq!(chain.len(), 4);
        match &chain[0] {
            Payload::Notify(n) => {
                assert_eq!(n.notify_type, NotifyType::NatDetectionSourceIp);
                assert_eq!(n.data.len(), 20);
            }
            p => panic!("{p:?}"),
        }
        assert_eq!(chain[1], Payload::VendorId(vec![0xde, 0xad, 0xbe, 0xef]));
        assert_eq!(chain[2].kind(), PayloadType::Unknown(99));
        match &chain[3] {
            Payload::Delete(d) => {
                assert_eq!(d.protocol_id, 3);
                assert_eq!(d.spis, vec![vec![0xc0, 0, 0, 1], vec![0xc0, 0, 0, 2]]);
            }
            p => panic!("{p:?}"),
        }
        let mut out = [0u8; 60];
        assert_eq!(super::super::emit_chain(&chain, &mut out).unwrap(), 60);
        assert_eq!(out, CHAIN);
    }

    #[test]
    fn refuses_critical_unknown_and_broken_lengths() {
        let mut critical = CHAIN;
        critical[37] = 0x80;
        assert_eq!(
            parse_chain(PayloadType::Notify, &critical).unwrap_err(),
            WireError::UnsupportedCritical(99)
        );
        let mut long = CHAIN;
        long[3] = 200;
        assert!(parse_chain(PayloadType::Notify, &long).is_err());
        let mut tiny = CHAIN;
        tiny[3] = 3;
        assert!(parse_chain(PayloadType::Notify, &tiny).is_err());
        // Octets left after the last payload.
        let mut extra = CHAIN.to_vec();
        extra.push(0);
        assert!(parse_chain(PayloadType::Notify, &extra).is_err());
        let mut bad_delete = CHAIN;
        bad_delete[51] = 3;
        assert!(parse_chain(PayloadType::Notify, &bad_delete).is_err());
    }

    #[test]
    fn cert_and_certreq_payloads_round_trip() {
        let chain = vec![
            Payload::Cert(CertPayload {
                encoding: 4,
                data: vec![0x30, 0x03, 1, 2, 3],
            }),
            Payload::CertReq(CertPayload {
                encoding: 4,
                data: vec![0xab; 20],
            }),
        ];
        let mut out = vec![0u8; super::super::chain_len(&chain)];
        super::super::emit_chain(&chain, &mut out).unwrap();
        // CERT (37): next CERTREQ (38), length 4 + 1 + 5.
        assert_eq!(&out[..6], &[38, 0, 0, 10, 4, 0x30]);
        assert_eq!(parse_chain(PayloadType::Cert, &out).unwrap(), chain);
        // A CERT payload needs at least its encoding octet.
        assert_eq!(
            parse_chain(PayloadType::Cert, &[0, 0, 0, 4]).unwrap_err(),
            WireError::Truncated("CERT payload")
        );
    }

    #[test]
    fn notify_numbers_round_trip() {
        for (t, n) in NOTIFY_NUMBERS {
            assert_eq!(NotifyType::from(n), t);
            assert_eq!(u16::from(t), n);
        }
        assert_eq!(NotifyType::from(40000), NotifyType::Unknown(40000));
        assert!(NotifyType::NoProposalChosen.is_error());
        assert!(!NotifyType::Cookie.is_error());
    }

    #[test]
    fn nothing_after_an_sk_payload() {
        let mut msg = vec![0u8; 28];
        msg[17] = 0x20;
        msg[16] = 46;
        msg.extend_from_slice(&[35, 0, 0, 8, 1, 2, 3, 4]);
        msg.extend_from_slice(&[0, 0, 0, 4]);
        let len = msg.len() as u32;
        msg[24..28].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            Message::parse(&msg).unwrap_err(),
            WireError::Invalid("payload after SK")
        );
        msg.truncate(36);
        msg[24..28].copy_from_slice(&36u32.to_be_bytes());
        let m = Message::parse(&msg).unwrap();
        assert_eq!(
            m.payloads,
            vec![Payload::Sk(SkPayload {
                first_inner: PayloadType::IdI,
                body: vec![1, 2, 3, 4]
            })]
        );
    }
}
