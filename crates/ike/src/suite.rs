//! The algorithms this core negotiates (RFC 8247 MUST/SHOULD+), their
//! transform IDs (IANA "IKEv2 Parameters"), and proposal building and
//! selection (RFC 7296 2.7, 3.3.6).

use crate::wire::{Proposal, ProtocolId, SaPayload, Transform, TransformType};

/// ENCR_AES_CBC (RFC 3602).
const ENCR_AES_CBC: u16 = 12;
/// ENCR_AES_GCM_16 (RFC 5282, RFC 4106).
const ENCR_AES_GCM_16: u16 = 20;
/// PRF_HMAC_SHA2_256 (RFC 4868).
const PRF_HMAC_SHA2_256: u16 = 5;
/// AUTH_HMAC_SHA2_256_128 (RFC 4868).
const AUTH_HMAC_SHA2_256_128: u16 = 12;
/// ESN transform: no extended sequence numbers.
const ESN_NONE: u16 = 0;

/// An encryption transform with its key size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// AES-CBC with a 128- or 256-bit key (needs an integrity transform).
    AesCbc {
        /// Key bits: 128 or 256.
        key_bits: u16,
    },
    /// AES-GCM with a 16-octet ICV and a 128- or 256-bit key (AEAD).
    AesGcm16 {
        /// Key bits: 128 or 256.
        key_bits: u16,
    },
}

impl Encryption {
    /// AES-GCM-16, 128-bit key.
    pub const AES128_GCM16: Encryption = Encryption::AesGcm16 { key_bits: 128 };
    /// AES-GCM-16, 256-bit key.
    pub const AES256_GCM16: Encryption = Encryption::AesGcm16 { key_bits: 256 };
    /// AES-CBC, 128-bit key.
    pub const AES128_CBC: Encryption = Encryption::AesCbc { key_bits: 128 };
    /// AES-CBC, 256-bit key.
    pub const AES256_CBC: Encryption = Encryption::AesCbc { key_bits: 256 };

    /// Whether it is an AEAD (no integrity transform, RFC 5282 8).
    pub fn is_aead(self) -> bool {
        matches!(self, Encryption::AesGcm16 { .. })
    }

    /// Key octets without the salt.
    pub fn key_len(self) -> usize {
        match self {
            Encryption::AesCbc { key_bits } | Encryption::AesGcm16 { key_bits } => {
                usize::from(key_bits / 8)
            }
        }
    }

    /// Salt octets taken from the key material after the key (RFC 5282 7.1,
    /// RFC 4106 8.1).
    pub fn salt_len(self) -> usize {
        if self.is_aead() {
            4
        } else {
            0
        }
    }

    fn transform(self) -> Transform {
        let (id, bits) = match self {
            Encryption::AesCbc { key_bits } => (ENCR_AES_CBC, key_bits),
            Encryption::AesGcm16 { key_bits } => (ENCR_AES_GCM_16, key_bits),
        };
        Transform::with_key_length(TransformType::Encr, id, bits)
    }

    fn from_transform(t: &Transform) -> Option<Encryption> {
        if t.has_unknown_attribute() {
            return None;
        }
        let key_bits = t.key_length()?;
        if key_bits != 128 && key_bits != 256 {
            return None;
        }
        match t.id {
            ENCR_AES_CBC => Some(Encryption::AesCbc { key_bits }),
            ENCR_AES_GCM_16 => Some(Encryption::AesGcm16 { key_bits }),
            _ => None,
        }
    }
}

/// An integrity transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integrity {
    /// HMAC-SHA-256 truncated to 128 bits (RFC 4868), 32-octet key.
    HmacSha256_128,
}

impl Integrity {
    /// Key octets.
    pub fn key_len(self) -> usize {
        32
    }

    /// ICV octets.
    pub fn icv_len(self) -> usize {
        16
    }

    fn from_transform(t: &Transform) -> Option<Integrity> {
        (t.id == AUTH_HMAC_SHA2_256_128 && t.attributes.is_empty())
            .then_some(Integrity::HmacSha256_128)
    }
}

/// A pseudorandom function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    /// HMAC-SHA-256 (RFC 4868): 32-octet keys and output.
    HmacSha256,
}

impl Prf {
    fn from_transform(t: &Transform) -> Option<Prf> {
        (t.id == PRF_HMAC_SHA2_256 && t.attributes.is_empty()).then_some(Prf::HmacSha256)
    }
}

/// A Diffie-Hellman group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// 19: NIST P-256 (RFC 5903).
    Ecp256,
    /// 31: Curve25519 (RFC 8031).
    Curve25519,
}

impl DhGroup {
    /// The group number.
    pub fn number(self) -> u16 {
        match self {
            DhGroup::Ecp256 => 19,
            DhGroup::Curve25519 => 31,
        }
    }

    /// The group with this number, if supported.
    pub fn from_number(n: u16) -> Option<DhGroup> {
        match n {
            19 => Some(DhGroup::Ecp256),
            31 => Some(DhGroup::Curve25519),
            _ => None,
        }
    }
}

/// The negotiated IKE SA algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeSuite {
    /// Encryption of the SK payload.
    pub encryption: Encryption,
    /// Integrity of the SK payload (none with an AEAD).
    pub integrity: Option<Integrity>,
    /// The PRF.
    pub prf: Prf,
    /// The Diffie-Hellman group.
    pub group: DhGroup,
}

/// The negotiated ESP algorithms of a CHILD_SA (ESN always off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspSuite {
    /// Encryption.
    pub encryption: Encryption,
    /// Integrity (none with an AEAD).
    pub integrity: Option<Integrity>,
    /// The Diffie-Hellman group of the CREATE_CHILD_SA that made it (PFS,
    /// RFC 7296 1.3.1, 2.17); none in IKE_AUTH or without PFS.
    pub group: Option<DhGroup>,
}

/// How the Diffie-Hellman transforms of ESP proposals are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pfs {
    /// IKE_AUTH: the first CHILD_SA's keys come from the IKE SA's
    /// exchange, so Diffie-Hellman transforms are ignored (RFC 7296 1.2).
    Ignore,
    /// CREATE_CHILD_SA without a KE payload: no group may be chosen.
    Without,
    /// CREATE_CHILD_SA with a KE payload of this group, preferred when
    /// acceptable.
    With(u16),
}

/// One configured IKE proposal: every combination of its lists is
/// acceptable (RFC 7296 3.3: one transform of each type is chosen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeProposal {
    /// Encryption transforms, preferred first.
    pub encryption: Vec<Encryption>,
    /// Integrity transforms (must be empty for AEADs, set otherwise).
    pub integrity: Vec<Integrity>,
    /// PRFs.
    pub prf: Vec<Prf>,
    /// Diffie-Hellman groups; the first is the one the initiator's KE uses.
    pub groups: Vec<DhGroup>,
}

/// One configured ESP proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspProposal {
    /// Encryption transforms, preferred first.
    pub encryption: Vec<Encryption>,
    /// Integrity transforms (empty for AEADs).
    pub integrity: Vec<Integrity>,
    /// Diffie-Hellman groups for PFS in CREATE_CHILD_SA, the first used in
    /// our requests; empty for none (then a peer's PFS is refused too).
    pub groups: Vec<DhGroup>,
}

/// The integrity and Diffie-Hellman transforms of a proposal, in the
/// order both IKE and ESP proposals list them (RFC 7296 3.3.2).
fn integrity_and_groups<'a>(
    integrity: &'a [Integrity],
    groups: &'a [DhGroup],
) -> impl Iterator<Item = Transform> + 'a {
    integrity
        .iter()
        .map(|_| Transform::new(TransformType::Integ, AUTH_HMAC_SHA2_256_128))
        .chain(
            groups
                .iter()
                .map(|g| Transform::new(TransformType::Dh, g.number())),
        )
}

impl IkeProposal {
    /// The SA payload proposal for it.
    pub fn to_wire(&self, number: u8, spi: Vec<u8>) -> Proposal {
        let mut transforms: Vec<Transform> =
            self.encryption.iter().map(|e| e.transform()).collect();
        transforms.extend(
            self.prf
                .iter()
                .map(|_| Transform::new(TransformType::Prf, PRF_HMAC_SHA2_256)),
        );
        transforms.extend(integrity_and_groups(&self.integrity, &self.groups));
        Proposal {
            number,
            protocol: ProtocolId::Ike,
            spi,
            transforms,
        }
    }

    /// Whether this configured proposal accepts `suite`.
    pub fn accepts(&self, suite: &IkeSuite) -> bool {
        self.encryption.contains(&suite.encryption)
            && self.prf.contains(&suite.prf)
            && self.groups.contains(&suite.group)
            && match suite.integrity {
                None => suite.encryption.is_aead(),
                Some(i) => !suite.encryption.is_aead() && self.integrity.contains(&i),
            }
    }
}

impl EspProposal {
    /// The SA payload proposal for it, with our inbound SPI.
    pub fn to_wire(&self, number: u8, spi: u32) -> Proposal {
        let mut transforms: Vec<Transform> =
            self.encryption.iter().map(|e| e.transform()).collect();
        transforms.extend(integrity_and_groups(&self.integrity, &self.groups));
        transforms.push(Transform::new(TransformType::Esn, ESN_NONE));
        Proposal {
            number,
            protocol: ProtocolId::Esp,
            spi: spi.to_be_bytes().to_vec(),
            transforms,
        }
    }

    /// Whether this configured proposal accepts `suite`, its PFS group
    /// included.
    pub fn accepts(&self, suite: &EspSuite) -> bool {
        self.accepts_algorithms(suite)
            && match suite.group {
                None => self.groups.is_empty(),
                Some(g) => self.groups.contains(&g),
            }
    }

    /// Whether it accepts `suite`'s encryption and integrity.
    pub fn accepts_algorithms(&self, suite: &EspSuite) -> bool {
        self.encryption.contains(&suite.encryption)
            && match suite.integrity {
                None => suite.encryption.is_aead(),
                Some(i) => !suite.encryption.is_aead() && self.integrity.contains(&i),
            }
    }
}

/// Why a proposal in strongSwan's notation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProposalError {
    /// A keyword this core does not implement.
    #[error("unknown algorithm {0:?}")]
    UnknownAlgorithm(String),
    /// A keyword of the wrong kind (a PRF in an ESP proposal).
    #[error("{0:?} is not an ESP algorithm")]
    NotForEsp(String),
}

/// One keyword of strongSwan's proposal notation.
enum Keyword {
    Encr(Encryption),
    Integ(Integrity),
    Prf(Prf),
    Group(DhGroup),
}

fn keyword(w: &str) -> Result<Keyword, ProposalError> {
    Ok(match w {
        "aes128gcm16" | "aes128gcm128" => Keyword::Encr(Encryption::AES128_GCM16),
        "aes256gcm16" | "aes256gcm128" => Keyword::Encr(Encryption::AES256_GCM16),
        "aes128" => Keyword::Encr(Encryption::AES128_CBC),
        "aes256" => Keyword::Encr(Encryption::AES256_CBC),
        "sha256" | "sha2_256" => Keyword::Integ(Integrity::HmacSha256_128),
        "prfsha256" => Keyword::Prf(Prf::HmacSha256),
        "ecp256" => Keyword::Group(DhGroup::Ecp256),
        "x25519" | "curve25519" => Keyword::Group(DhGroup::Curve25519),
        _ => return Err(ProposalError::UnknownAlgorithm(w.to_string())),
    })
}

/// strongSwan's notation for IKE proposals, e.g.
/// `aes128gcm16-prfsha256-ecp256` or `aes256-sha256-x25519` (the PRF
/// follows the integrity algorithm when none is named, as in strongSwan).
impl core::str::FromStr for IkeProposal {
    type Err = ProposalError;

    fn from_str(s: &str) -> Result<IkeProposal, ProposalError> {
        let mut p = IkeProposal {
            encryption: vec![],
            integrity: vec![],
            prf: vec![],
            groups: vec![],
        };
        for w in s.split('-') {
            match keyword(w)? {
                Keyword::Encr(e) => p.encryption.push(e),
                Keyword::Integ(i) => p.integrity.push(i),
                Keyword::Prf(f) => p.prf.push(f),
                Keyword::Group(g) => p.groups.push(g),
            }
        }
        if p.prf.is_empty() && !p.integrity.is_empty() {
            p.prf.push(Prf::HmacSha256);
        }
        Ok(p)
    }
}

/// strongSwan's notation for ESP proposals, e.g. `aes128gcm16` or
/// `aes256-sha256-ecp256` (a group asks for PFS in CREATE_CHILD_SA).
impl core::str::FromStr for EspProposal {
    type Err = ProposalError;

    fn from_str(s: &str) -> Result<EspProposal, ProposalError> {
        let mut p = EspProposal {
            encryption: vec![],
            integrity: vec![],
            groups: vec![],
        };
        for w in s.split('-') {
            match keyword(w)? {
                Keyword::Encr(e) => p.encryption.push(e),
                Keyword::Integ(i) => p.integrity.push(i),
                Keyword::Group(g) => p.groups.push(g),
                Keyword::Prf(_) => return Err(ProposalError::NotForEsp(w.to_string())),
            }
        }
        Ok(p)
    }
}

/// The transforms of a received proposal each of whose types has exactly
/// the options this core understands, with an unknown transform type
/// making the whole proposal unacceptable (RFC 7296 3.3.6).
struct Choices<'a> {
    proposal: &'a Proposal,
}

impl Choices<'_> {
    fn known_types_only(&self, allowed: &[TransformType]) -> bool {
        self.proposal
            .transforms
            .iter()
            .all(|t| allowed.contains(&t.kind))
    }

    fn encryption(&self) -> impl Iterator<Item = Encryption> + '_ {
        self.proposal
            .of_type(TransformType::Encr)
            .filter_map(Encryption::from_transform)
    }

    /// The integrity options: `[None]` when the proposal has none (an AEAD
    /// proposal), else the understood ones.
    fn integrity(&self) -> Vec<Option<Integrity>> {
        let all: Vec<&Transform> = self.proposal.of_type(TransformType::Integ).collect();
        // AUTH_NONE (0) is allowed with AEADs (RFC 7296 3.3.3).
        if all.iter().all(|t| t.id == 0) {
            return vec![None];
        }
        all.into_iter()
            .filter_map(Integrity::from_transform)
            .map(Some)
            .collect()
    }
}

/// Picks the IKE suite from the peer's SA payload (responder, RFC 7296
/// 2.7): the first of the peer's proposals our configuration accepts, and
/// in it the peer's first acceptable transform of each type, except that
/// the group of the peer's KE payload is taken when acceptable. Returns
/// the chosen proposal's number and suite.
pub fn select_ike(
    offered: &SaPayload,
    ours: &[IkeProposal],
    ke_group: Option<u16>,
) -> Option<(u8, IkeSuite)> {
    select_ike_with_spi(offered, ours, ke_group, 0).map(|(n, _, s)| (n, s))
}

/// [`select_ike`] for proposals carrying an SPI of `spi_len` octets (8 in
/// an IKE SA rekey, RFC 7296 1.3.2); also returns the chosen proposal's
/// SPI.
pub fn select_ike_with_spi(
    offered: &SaPayload,
    ours: &[IkeProposal],
    ke_group: Option<u16>,
    spi_len: usize,
) -> Option<(u8, Vec<u8>, IkeSuite)> {
    for p in &offered.proposals {
        if p.protocol != ProtocolId::Ike || p.spi.len() != spi_len {
            continue;
        }
        let c = Choices { proposal: p };
        let types = [
            TransformType::Encr,
            TransformType::Prf,
            TransformType::Integ,
            TransformType::Dh,
        ];
        if !c.known_types_only(&types) {
            continue;
        }
        let prfs: Vec<Prf> = p
            .of_type(TransformType::Prf)
            .filter_map(Prf::from_transform)
            .collect();
        let mut groups: Vec<DhGroup> = p
            .of_type(TransformType::Dh)
            .filter_map(|t| DhGroup::from_number(t.id))
            .collect();
        if let Some(g) = ke_group.and_then(DhGroup::from_number) {
            if let Some(i) = groups.iter().position(|x| *x == g) {
                groups.swap(0, i);
            }
        }
        for encryption in c.encryption() {
            for integrity in c.integrity() {
                for prf in &prfs {
                    for group in &groups {
                        let suite = IkeSuite {
                            encryption,
                            integrity,
                            prf: *prf,
                            group: *group,
                        };
                        if ours.iter().any(|o| o.accepts(&suite)) {
                            return Some((p.number, p.spi.clone(), suite));
                        }
                    }
                }
            }
        }
    }
    None
}

/// Picks the ESP suite and the peer's SPI from the peer's SA payload
/// (responder): as [`select_ike`], ESN must be offered as "none", and the
/// Diffie-Hellman group read as `pfs` says.
pub fn select_esp(
    offered: &SaPayload,
    ours: &[EspProposal],
    pfs: Pfs,
) -> Option<(u8, u32, EspSuite)> {
    for p in &offered.proposals {
        if p.protocol != ProtocolId::Esp || p.spi.len() != 4 {
            continue;
        }
        let c = Choices { proposal: p };
        let types = [
            TransformType::Encr,
            TransformType::Integ,
            TransformType::Esn,
            TransformType::Dh,
        ];
        if !c.known_types_only(&types) {
            continue;
        }
        let esn_none = p.of_type(TransformType::Esn).any(|t| t.id == ESN_NONE);
        let has_esn = p.of_type(TransformType::Esn).next().is_some();
        if has_esn && !esn_none {
            continue;
        }
        let spi = u32::from_be_bytes([p.spi[0], p.spi[1], p.spi[2], p.spi[3]]);
        // NONE (0) or no Diffie-Hellman transform at all: no PFS.
        let offered_groups: Vec<u16> = p.of_type(TransformType::Dh).map(|t| t.id).collect();
        let without = offered_groups.is_empty() || offered_groups.contains(&0);
        let groups: Vec<Option<DhGroup>> = match pfs {
            Pfs::Ignore => vec![None],
            Pfs::Without => {
                if without {
                    vec![None]
                } else {
                    vec![]
                }
            }
            Pfs::With(ke) => {
                let mut g: Vec<Option<DhGroup>> = offered_groups
                    .iter()
                    .filter_map(|n| DhGroup::from_number(*n))
                    .map(Some)
                    .collect();
                if let Some(i) = g.iter().position(|x| x.map(DhGroup::number) == Some(ke)) {
                    g.swap(0, i);
                }
                g
            }
        };
        for encryption in c.encryption() {
            for integrity in c.integrity() {
                for group in &groups {
                    let suite = EspSuite {
                        encryption,
                        integrity,
                        group: *group,
                    };
                    let ok = |o: &EspProposal| match pfs {
                        Pfs::Ignore => o.accepts_algorithms(&suite),
                        _ => o.accepts(&suite),
                    };
                    if ours.iter().any(ok) {
                        return Some((p.number, spi, suite));
                    }
                }
            }
        }
    }
    None
}

/// The single proposal a responder returns for `suite` (RFC 7296 2.7: one
/// transform of each type, the proposal number echoed).
pub fn ike_reply(number: u8, spi: Vec<u8>, suite: &IkeSuite) -> Proposal {
    IkeProposal {
        encryption: vec![suite.encryption],
        integrity: suite.integrity.into_iter().collect(),
        prf: vec![suite.prf],
        groups: vec![suite.group],
    }
    .to_wire(number, spi)
}

/// The single proposal a responder returns for an ESP `suite`.
pub fn esp_reply(number: u8, spi: u32, suite: &EspSuite) -> Proposal {
    EspProposal {
        encryption: vec![suite.encryption],
        integrity: suite.integrity.into_iter().collect(),
        groups: suite.group.into_iter().collect(),
    }
    .to_wire(number, spi)
}

/// Reads the responder's answer to our IKE proposals (initiator): exactly
/// one proposal with one transform of each type, which our configuration
/// accepts.
pub fn accept_ike_reply(reply: &SaPayload, ours: &[IkeProposal]) -> Option<IkeSuite> {
    accept_ike_reply_with_spi(reply, ours, 0).map(|(_, s)| s)
}

/// [`accept_ike_reply`] for a reply carrying an SPI of `spi_len` octets
/// (an IKE SA rekey); also returns that SPI.
pub fn accept_ike_reply_with_spi(
    reply: &SaPayload,
    ours: &[IkeProposal],
    spi_len: usize,
) -> Option<(Vec<u8>, IkeSuite)> {
    let [p] = reply.proposals.as_slice() else {
        return None;
    };
    let one = |k| {
        let mut it = p.of_type(k);
        match (it.next(), it.next()) {
            (Some(t), None) => Some(Some(t)),
            (None, _) => Some(None),
            _ => None,
        }
    };
    let (_, spi, suite) = select_ike_with_spi(reply, ours, None, spi_len)?;
    // Every type at most once: a reply with alternatives is not a choice.
    for k in [
        TransformType::Encr,
        TransformType::Prf,
        TransformType::Integ,
        TransformType::Dh,
    ] {
        one(k)?;
    }
    Some((spi, suite))
}

/// Reads the responder's answer to our ESP proposals (initiator): the
/// suite and the responder's SPI.
pub fn accept_esp_reply(
    reply: &SaPayload,
    ours: &[EspProposal],
    pfs: Pfs,
) -> Option<(u32, EspSuite)> {
    let [p] = reply.proposals.as_slice() else {
        return None;
    };
    if p.of_type(TransformType::Encr).count() != 1
        || p.of_type(TransformType::Integ).count() > 1
        || p.of_type(TransformType::Dh).count() > 1
    {
        return None;
    }
    select_esp(reply, ours, pfs).map(|(_, spi, s)| (spi, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcm_ike(groups: Vec<DhGroup>) -> IkeProposal {
        IkeProposal {
            encryption: vec![Encryption::AES128_GCM16],
            integrity: vec![],
            prf: vec![Prf::HmacSha256],
            groups,
        }
    }

    #[test]
    fn responder_takes_the_group_of_the_ke_payload() {
        let offered = SaPayload {
            proposals: vec![gcm_ike(vec![DhGroup::Ecp256, DhGroup::Curve25519]).to_wire(1, vec![])],
        };
        let ours = [gcm_ike(vec![DhGroup::Curve25519, DhGroup::Ecp256])];
        let (n, s) = select_ike(&offered, &ours, Some(31)).unwrap();
        assert_eq!(n, 1);
        assert_eq!(s.group, DhGroup::Curve25519);
        let (_, s) = select_ike(&offered, &ours, Some(19)).unwrap();
        assert_eq!(s.group, DhGroup::Ecp256);
        let (_, s) = select_ike(&offered, &ours, None).unwrap();
        assert_eq!(s.group, DhGroup::Ecp256);
    }

    #[test]
    fn no_common_proposal() {
        let offered = SaPayload {
            proposals: vec![gcm_ike(vec![DhGroup::Ecp256]).to_wire(1, vec![])],
        };
        assert!(select_ike(&offered, &[gcm_ike(vec![DhGroup::Curve25519])], Some(19)).is_none());
        let cbc = IkeProposal {
            encryption: vec![Encryption::AES256_CBC],
            integrity: vec![Integrity::HmacSha256_128],
            prf: vec![Prf::HmacSha256],
            groups: vec![DhGroup::Ecp256],
        };
        assert!(select_ike(&offered, std::slice::from_ref(&cbc), Some(19)).is_none());
        let offered_cbc = SaPayload {
            proposals: vec![cbc.to_wire(1, vec![])],
        };
        let (_, s) = select_ike(&offered_cbc, &[cbc], Some(19)).unwrap();
        assert_eq!(s.integrity, Some(Integrity::HmacSha256_128));
    }

    #[test]
    fn unknown_transform_type_rejects_the_proposal() {
        let mut p = gcm_ike(vec![DhGroup::Ecp256]).to_wire(1, vec![]);
        p.transforms
            .push(Transform::new(TransformType::Unknown(9), 1));
        let offered = SaPayload { proposals: vec![p] };
        assert!(select_ike(&offered, &[gcm_ike(vec![DhGroup::Ecp256])], Some(19)).is_none());
    }

    #[test]
    fn esp_selection_and_reply() {
        let ours = [EspProposal {
            encryption: vec![Encryption::AES256_GCM16, Encryption::AES128_GCM16],
            integrity: vec![],
            groups: vec![],
        }];
        let offered = SaPayload {
            proposals: vec![
                EspProposal {
                    encryption: vec![Encryption::AES128_CBC],
                    integrity: vec![Integrity::HmacSha256_128],
                    groups: vec![],
                }
                .to_wire(1, 0x1111_1111),
                EspProposal {
                    encryption: vec![Encryption::AES128_GCM16],
                    integrity: vec![],
                    groups: vec![DhGroup::Curve25519],
                }
                .to_wire(2, 0x2222_2222),
            ],
        };
        // IKE_AUTH ignores the offered PFS group.
        let (n, spi, s) = select_esp(&offered, &ours, Pfs::Ignore).unwrap();
        assert_eq!(
            (n, spi, s.encryption),
            (2, 0x2222_2222, Encryption::AES128_GCM16)
        );
        assert_eq!(s.group, None);
        let reply = SaPayload {
            proposals: vec![esp_reply(n, 0x3333_3333, &s)],
        };
        assert_eq!(
            accept_esp_reply(&reply, &ours, Pfs::Ignore),
            Some((0x3333_3333, s))
        );
        // In CREATE_CHILD_SA a proposal with PFS needs a KE payload, and
        // our configuration must want PFS with that group.
        assert!(select_esp(&offered, &ours, Pfs::Without).is_none());
        assert!(select_esp(&offered, &ours, Pfs::With(31)).is_none());
        let pfs = [EspProposal {
            groups: vec![DhGroup::Ecp256, DhGroup::Curve25519],
            ..ours[0].clone()
        }];
        let (_, _, s) = select_esp(&offered, &pfs, Pfs::With(31)).unwrap();
        assert_eq!(s.group, Some(DhGroup::Curve25519));
    }

    #[test]
    fn strongswan_notation() {
        let p: IkeProposal = "aes128gcm16-prfsha256-ecp256".parse().unwrap();
        assert_eq!(p, gcm_ike(vec![DhGroup::Ecp256]));
        let p: IkeProposal = "aes256-sha256-x25519".parse().unwrap();
        assert_eq!(p.encryption, vec![Encryption::AES256_CBC]);
        assert_eq!(p.integrity, vec![Integrity::HmacSha256_128]);
        assert_eq!(p.prf, vec![Prf::HmacSha256]);
        assert_eq!(p.groups, vec![DhGroup::Curve25519]);
        let e: EspProposal = "aes128gcm16-x25519".parse().unwrap();
        assert_eq!(e.groups, vec![DhGroup::Curve25519]);
        assert_eq!(
            "aes128gcm16-prfsha256".parse::<EspProposal>(),
            Err(ProposalError::NotForEsp("prfsha256".into()))
        );
        assert_eq!(
            "3des-sha1-modp1024".parse::<IkeProposal>(),
            Err(ProposalError::UnknownAlgorithm("3des".into()))
        );
    }
}
