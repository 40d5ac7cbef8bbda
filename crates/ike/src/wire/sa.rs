//! Security Association payload (RFC 7296 3.3): proposals, transforms and
//! transform attributes.

use super::header::read_u16;
use super::WireError;

/// Protocol IDs of a proposal (RFC 7296 3.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolId {
    /// IKE (1).
    Ike,
    /// AH (2).
    Ah,
    /// ESP (3).
    Esp,
    /// Any other value.
    Unknown(u8),
}

impl From<u8> for ProtocolId {
    fn from(v: u8) -> Self {
        match v {
            1 => ProtocolId::Ike,
            2 => ProtocolId::Ah,
            3 => ProtocolId::Esp,
            v => ProtocolId::Unknown(v),
        }
    }
}

impl From<ProtocolId> for u8 {
    fn from(v: ProtocolId) -> u8 {
        match v {
            ProtocolId::Ike => 1,
            ProtocolId::Ah => 2,
            ProtocolId::Esp => 3,
            ProtocolId::Unknown(v) => v,
        }
    }
}

/// Transform types (RFC 7296 3.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransformType {
    /// Encryption algorithm (1).
    Encr,
    /// Pseudorandom function (2).
    Prf,
    /// Integrity algorithm (3).
    Integ,
    /// Diffie-Hellman group (4).
    Dh,
    /// Extended sequence numbers (5).
    Esn,
    /// Any other value.
    Unknown(u8),
}

impl From<u8> for TransformType {
    fn from(v: u8) -> Self {
        match v {
            1 => TransformType::Encr,
            2 => TransformType::Prf,
            3 => TransformType::Integ,
            4 => TransformType::Dh,
            5 => TransformType::Esn,
            v => TransformType::Unknown(v),
        }
    }
}

impl From<TransformType> for u8 {
    fn from(v: TransformType) -> u8 {
        match v {
            TransformType::Encr => 1,
            TransformType::Prf => 2,
            TransformType::Integ => 3,
            TransformType::Dh => 4,
            TransformType::Esn => 5,
            TransformType::Unknown(v) => v,
        }
    }
}

/// A transform attribute (RFC 7296 3.3.5), TV or TLV format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute type without the format bit (14: Key Length).
    pub kind: u16,
    /// Whether it is in TV format (a 2-octet value in the header).
    pub tv: bool,
    /// The value (2 octets when `tv`).
    pub value: Vec<u8>,
}

/// Attribute type Key Length (RFC 7296 3.3.5).
pub const ATTR_KEY_LENGTH: u16 = 14;

impl Attribute {
    /// The Key Length attribute (TV format), in bits.
    pub fn key_length(bits: u16) -> Attribute {
        Attribute {
            kind: ATTR_KEY_LENGTH,
            tv: true,
            value: bits.to_be_bytes().to_vec(),
        }
    }

    fn buffer_len(&self) -> usize {
        if self.tv {
            4
        } else {
            4 + self.value.len()
        }
    }
}

/// A transform substructure (RFC 7296 3.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// Its type.
    pub kind: TransformType,
    /// Transform ID.
    pub id: u16,
    /// Attributes (a Key Length for variable-length ciphers).
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// A transform without attributes.
    pub fn new(kind: TransformType, id: u16) -> Transform {
        Transform {
            kind,
            id,
            attributes: Vec::new(),
        }
    }

    /// A transform with a Key Length attribute.
    pub fn with_key_length(kind: TransformType, id: u16, bits: u16) -> Transform {
        Transform {
            kind,
            id,
            attributes: vec![Attribute::key_length(bits)],
        }
    }

    /// The Key Length attribute's value in bits, if there is one.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes
            .iter()
            .find(|a| a.kind == ATTR_KEY_LENGTH && a.tv)
            .map(|a| read_u16(&a.value))
    }

    /// Whether it has an attribute other than Key Length (RFC 7296 3.3.6:
    /// a transform with an unknown attribute is not acceptable).
    pub fn has_unknown_attribute(&self) -> bool {
        self.attributes.iter().any(|a| a.kind != ATTR_KEY_LENGTH)
    }

    fn buffer_len(&self) -> usize {
        8 + self
            .attributes
            .iter()
            .map(Attribute::buffer_len)
            .sum::<usize>()
    }
}

/// A proposal substructure (RFC 7296 3.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number (the first is 1; a response echoes the chosen one).
    pub number: u8,
    /// The protocol it negotiates.
    pub protocol: ProtocolId,
    /// The sender's SPI: empty for IKE_SA_INIT, 4 octets for ESP, 8 for an
    /// IKE SA rekey.
    pub spi: Vec<u8>,
    /// The transforms.
    pub transforms: Vec<Transform>,
}

impl Proposal {
    fn buffer_len(&self) -> usize {
        8 + self.spi.len()
            + self
                .transforms
                .iter()
                .map(Transform::buffer_len)
                .sum::<usize>()
    }

    /// The transforms of one type.
    pub fn of_type(&self, kind: TransformType) -> impl Iterator<Item = &Transform> {
        self.transforms.iter().filter(move |t| t.kind == kind)
    }
}

/// The Security Association payload's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaPayload {
    /// The proposals in preference order.
    pub proposals: Vec<Proposal>,
}

impl SaPayload {
    /// Parses the body of an SA payload.
    pub fn parse(mut b: &[u8]) -> Result<SaPayload, WireError> {
        let mut proposals = Vec::new();
        let mut last_seen = false;
        while !b.is_empty() {
            if last_seen {
                return Err(WireError::Invalid("proposal after the last one"));
            }
            if b.len() < 8 {
                return Err(WireError::Truncated("proposal"));
            }
            let len = read_u16(&b[2..]) as usize;
            let spi_size = b[6] as usize;
            if len < 8 + spi_size {
                return Err(WireError::BadLength("proposal"));
            }
            let Some(whole) = b.get(..len) else {
                return Err(WireError::Truncated("proposal"));
            };
            last_seen = match b[0] {
                0 => true,
                2 => false,
                _ => return Err(WireError::Invalid("proposal Last Substruc")),
            };
            let count = whole[7] as usize;
            let transforms = parse_transforms(&whole[8 + spi_size..], count)?;
            proposals.push(Proposal {
                number: whole[4],
                protocol: whole[5].into(),
                spi: whole[8..8 + spi_size].to_vec(),
                transforms,
            });
            b = &b[len..];
        }
        if !last_seen {
            return Err(WireError::Invalid("SA payload without a last proposal"));
        }
        Ok(SaPayload { proposals })
    }

    /// Octets of the body.
    pub fn buffer_len(&self) -> usize {
        self.proposals.iter().map(Proposal::buffer_len).sum()
    }

    /// Writes the body into `buf` of exactly [`SaPayload::buffer_len`]
    /// octets.
    pub fn emit(&self, buf: &mut [u8]) {
        let mut at = 0;
        for (i, p) in self.proposals.iter().enumerate() {
            let len = p.buffer_len();
            let out = &mut buf[at..at + len];
            out[0] = if i + 1 == self.proposals.len() { 0 } else { 2 };
            out[1] = 0;
            out[2..4].copy_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
            out[4] = p.number;
            out[5] = p.protocol.into();
            out[6] = u8::try_from(p.spi.len()).unwrap_or(u8::MAX);
            out[7] = u8::try_from(p.transforms.len()).unwrap_or(u8::MAX);
            out[8..8 + p.spi.len()].copy_from_slice(&p.spi);
            let mut t_at = 8 + p.spi.len();
            for (j, t) in p.transforms.iter().enumerate() {
                let tlen = t.buffer_len();
                let o = &mut out[t_at..t_at + tlen];
                o[0] = if j + 1 == p.transforms.len() { 0 } else { 3 };
                o[1] = 0;
                o[2..4].copy_from_slice(&u16::try_from(tlen).unwrap_or(u16::MAX).to_be_bytes());
                o[4] = t.kind.into();
                o[5] = 0;
                o[6..8].copy_from_slice(&t.id.to_be_bytes());
                let mut a_at = 8;
                for a in &t.attributes {
                    if a.tv {
                        o[a_at..a_at + 2].copy_from_slice(&(a.kind | 0x8000).to_be_bytes());
                        o[a_at + 2..a_at + 4].copy_from_slice(&a.value[..2]);
                    } else {
                        o[a_at..a_at + 2].copy_from_slice(&(a.kind & 0x7fff).to_be_bytes());
                        let vlen = u16::try_from(a.value.len()).unwrap_or(u16::MAX);
                        o[a_at + 2..a_at + 4].copy_from_slice(&vlen.to_be_bytes());
                        o[a_at + 4..a_at + 4 + a.value.len()].copy_from_slice(&a.value);
                    }
                    a_at += a.buffer_len();
                }
                t_at += tlen;
            }
            at += len;
        }
    }
}

fn parse_transforms(mut b: &[u8], count: usize) -> Result<Vec<Transform>, WireError> {
    let mut out = Vec::new();
    for i in 0..count {
        if b.len() < 8 {
            return Err(WireError::Truncated("transform"));
        }
        let len = read_u16(&b[2..]) as usize;
        if len < 8 {
            return Err(WireError::BadLength("transform"));
        }
        let Some(whole) = b.get(..len) else {
            return Err(WireError::Truncated("transform"));
        };
        let expect_last = i + 1 == count;
        match (b[0], expect_last) {
            (0, true) | (3, false) => {}
            _ => return Err(WireError::Invalid("transform Last Substruc")),
        }
        out.push(Transform {
            kind: whole[4].into(),
            id: read_u16(&whole[6..]),
            attributes: parse_attributes(&whole[8..])?,
        });
        b = &b[len..];
    }
    if !b.is_empty() {
        return Err(WireError::BadLength("proposal's transforms"));
    }
    Ok(out)
}

fn parse_attributes(mut b: &[u8]) -> Result<Vec<Attribute>, WireError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err(WireError::Truncated("transform attribute"));
        }
        let head = read_u16(b);
        let kind = head & 0x7fff;
        if head & 0x8000 != 0 {
            out.push(Attribute {
                kind,
                tv: true,
                value: b[2..4].to_vec(),
            });
            b = &b[4..];
        } else {
            let len = read_u16(&b[2..]) as usize;
            let Some(value) = b.get(4..4 + len) else {
                return Err(WireError::Truncated("transform attribute"));
            };
            out.push(Attribute {
                kind,
                tv: false,
                value: value.to_vec(),
            });
            b = &b[4 + len..];
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SA payload body strongSwan 5.9.8 sends for the IKE proposal
    /// `aes128gcm16-prfsha256-ecp256` (one proposal: ENCR_AES_GCM_16 with a
    /// 128-bit key, PRF_HMAC_SHA2_256, group 19), from the captured
    /// IKE_SA_INIT request in `wire::tests`.
    const GCM_PROPOSAL: [u8; 36] = [
        0, 0, 0, 36, 1, 1, 0, 3, // proposal 1, IKE, no SPI, 3 transforms
        3, 0, 0, 12, 1, 0, 0, 20, 0x80, 14, 0, 128, // ENCR 20, key length 128
        3, 0, 0, 8, 2, 0, 0, 5, // PRF 5
        0, 0, 0, 8, 4, 0, 0, 19, // DH 19
    ];

    #[test]
    fn parses_and_emits_a_strongswan_proposal() {
        let sa = SaPayload::parse(&GCM_PROPOSAL).unwrap();
        assert_eq!(sa.proposals.len(), 1);
        let p = &sa.proposals[0];
        assert_eq!(p.protocol, ProtocolId::Ike);
        assert_eq!(p.transforms.len(), 3);
        assert_eq!(p.transforms[0].kind, TransformType::Encr);
        assert_eq!(p.transforms[0].id, 20);
        assert_eq!(p.transforms[0].key_length(), Some(128));
        assert_eq!(p.of_type(TransformType::Dh).next().unwrap().id, 19);
        let mut out = [0u8; 36];
        assert_eq!(sa.buffer_len(), 36);
        sa.emit(&mut out);
        assert_eq!(out, GCM_PROPOSAL);
    }

    #[test]
    fn tlv_attributes_round_trip() {
        let sa = SaPayload {
            proposals: vec![Proposal {
                number: 1,
                protocol: ProtocolId::Esp,
                spi: vec![1, 2, 3, 4],
                transforms: vec![Transform {
                    kind: TransformType::Unknown(200),
                    id: 7,
                    attributes: vec![Attribute {
                        kind: 99,
                        tv: false,
                        value: vec![1, 2, 3],
                    }],
                }],
            }],
        };
        let mut out = vec![0u8; sa.buffer_len()];
        sa.emit(&mut out);
        assert_eq!(SaPayload::parse(&out).unwrap(), sa);
        assert!(sa.proposals[0].transforms[0].has_unknown_attribute());
    }

    #[test]
    fn refuses_inconsistent_proposals() {
        let mut more = GCM_PROPOSAL;
        more[0] = 2;
        assert!(SaPayload::parse(&more).is_err());
        let mut count = GCM_PROPOSAL;
        count[7] = 4;
        assert!(SaPayload::parse(&count).is_err());
        let mut tlen = GCM_PROPOSAL;
        tlen[11] = 4;
        assert!(SaPayload::parse(&tlen).is_err());
        let mut spi = GCM_PROPOSAL;
        spi[6] = 40;
        assert!(SaPayload::parse(&spi).is_err());
        assert!(SaPayload::parse(&GCM_PROPOSAL[..35]).is_err());
        let mut last = GCM_PROPOSAL;
        last[8] = 0;
        assert!(SaPayload::parse(&last).is_err());
    }
}
