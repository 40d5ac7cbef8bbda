//! IKEv2 key material: the PRF and prf+ (RFC 7296 2.13), SKEYSEED and the
//! SK_* keys (2.14), PSK authentication (2.15), CHILD_SA KEYMAT (2.17),
//! protection of the SK payload (3.14; AES-GCM per RFC 5282, AES-CBC with
//! HMAC-SHA-256-128 per RFC 4868), Diffie-Hellman (RFC 5903, RFC 8031),
//! NAT detection hashes (2.23) and cookies (2.6).
//!
//! Every secret lives in a [`Secret`] (zeroized on drop, masked in Debug).
//! ring's key schedules offer no zeroization hook; only the raw bytes are
//! kept here.

use crate::suite::{DhGroup, Encryption, EspSuite, IkeSuite, Integrity};
use crate::wire::{HeaderRepr, PayloadType, HEADER_LEN};
use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use ring::agreement;
use ring::rand::SecureRandom;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Secret octets: zeroized on drop, never shown.
#[derive(Clone, Default)]
pub struct Secret(Zeroizing<Vec<u8>>);

/// Constant-time, so comparing a secret reveals nothing through timing.
impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl Eq for Secret {}

impl Secret {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    /// The octets.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in octets.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl core::fmt::Debug for Secret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Secret({} octets, masked)", self.0.len())
    }
}

/// Why a cryptographic step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The system random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// The peer's KE data is not a valid public value of the group.
    #[error("invalid Diffie-Hellman public value")]
    InvalidPublicValue,
    /// prf+ asked for more than 255 blocks (RFC 7296 2.13).
    #[error("prf+ output too long")]
    PrfPlusTooLong,
    /// The SK payload's ICV did not verify or its padding was invalid.
    #[error("SK payload integrity check failed")]
    IntegrityCheckFailed,
    /// The SK payload is too short for its IV and ICV, or its ciphertext is
    /// not a whole number of blocks.
    #[error("malformed SK payload")]
    MalformedSk,
    /// Our private key could not sign.
    #[error("signing failed")]
    Signature,
}

/// prf = HMAC-SHA-256 over the concatenation of `parts` (RFC 4868).
pub fn prf(key: &[u8], parts: &[&[u8]]) -> Secret {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    Secret::new(ctx.sign().as_ref().to_vec())
}

/// prf+ (RFC 7296 2.13): T1 | T2 | ... truncated to `len` octets, where
/// T1 = prf(K, S | 0x01) and Tn = prf(K, Tn-1 | S | n).
pub fn prf_plus(key: &[u8], seed: &[u8], len: usize) -> Result<Secret, CryptoError> {
    let blocks = u8::try_from(len.div_ceil(32)).map_err(|_| CryptoError::PrfPlusTooLong)?;
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut prev = Secret::default();
    for n in 1..=blocks {
        prev = prf(key, &[prev.expose(), seed, &[n]]);
        out.extend_from_slice(prev.expose());
    }
    out.truncate(len);
    Ok(Secret(out))
}

/// The IKE SA's keys (RFC 7296 2.14).
#[derive(Debug, Clone)]
pub struct IkeKeys {
    /// SK_d: derives CHILD_SA keys.
    pub sk_d: Secret,
    /// SK_ai: initiator's integrity key (empty with an AEAD).
    pub sk_ai: Secret,
    /// SK_ar: responder's integrity key.
    pub sk_ar: Secret,
    /// SK_ei: initiator's encryption key (with the 4-octet salt for GCM).
    pub sk_ei: Secret,
    /// SK_er: responder's encryption key.
    pub sk_er: Secret,
    /// SK_pi: used in the initiator's AUTH.
    pub sk_pi: Secret,
    /// SK_pr: used in the responder's AUTH.
    pub sk_pr: Secret,
}

/// SKEYSEED = prf(Ni | Nr, g^ir) and the SK_* keys from prf+(SKEYSEED,
/// Ni | Nr | SPIi | SPIr) (RFC 7296 2.14). With AES-GCM the PRF key is
/// the whole nonces (no truncation: HMAC takes any key length), and each
/// SK_e key carries its salt (RFC 5282 7.1).
pub fn derive_ike_keys(
    suite: &IkeSuite,
    ni: &[u8],
    nr: &[u8],
    shared: &Secret,
    spi_i: u64,
    spi_r: u64,
) -> Result<IkeKeys, CryptoError> {
    let nonces: Zeroizing<Vec<u8>> = Zeroizing::new([ni, nr].concat());
    let skeyseed = prf(&nonces, &[shared.expose()]);
    keys_from_skeyseed(suite, &skeyseed, ni, nr, spi_i, spi_r)
}

/// The keys of an IKE SA made by rekeying (RFC 7296 2.18): SKEYSEED =
/// prf(SK_d (old), g^ir (new) | Ni | Nr), the rest as in 2.14 with the new
/// SPIs and nonces.
pub fn derive_rekeyed_ike_keys(
    suite: &IkeSuite,
    old_sk_d: &Secret,
    ni: &[u8],
    nr: &[u8],
    shared: &Secret,
    spi_i: u64,
    spi_r: u64,
) -> Result<IkeKeys, CryptoError> {
    let skeyseed = prf(old_sk_d.expose(), &[shared.expose(), ni, nr]);
    keys_from_skeyseed(suite, &skeyseed, ni, nr, spi_i, spi_r)
}

/// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} =
/// prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) (RFC 7296 2.14).
fn keys_from_skeyseed(
    suite: &IkeSuite,
    skeyseed: &Secret,
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> Result<IkeKeys, CryptoError> {
    let prf_len = 32;
    let integ_len = suite.integrity.map_or(0, Integrity::key_len);
    let encr_len = suite.encryption.key_len() + suite.encryption.salt_len();
    let seed = [ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()].concat();
    let total = 3 * prf_len + 2 * integ_len + 2 * encr_len;
    let stream = prf_plus(skeyseed.expose(), &seed, total)?;
    let mut at = 0;
    let mut take = |n: usize| {
        let s = Secret::new(stream.expose()[at..at + n].to_vec());
        at += n;
        s
    };
    Ok(IkeKeys {
        sk_d: take(prf_len),
        sk_ai: take(integ_len),
        sk_ar: take(integ_len),
        sk_ei: take(encr_len),
        sk_er: take(encr_len),
        sk_pi: take(prf_len),
        sk_pr: take(prf_len),
    })
}

/// The AUTH payload's data for a pre-shared key (RFC 7296 2.15):
/// `prf(prf(PSK, "Key Pad for IKEv2"), <message> | <peer's nonce> |
/// prf(SK_p, <ID payload body>))`.
pub fn psk_auth(
    psk: &Secret,
    message: &[u8],
    peer_nonce: &[u8],
    sk_p: &Secret,
    id_body: &[u8],
) -> Secret {
    let key = prf(psk.expose(), &[b"Key Pad for IKEv2"]);
    let maced_id = prf(sk_p.expose(), &[id_body]);
    prf(key.expose(), &[message, peer_nonce, maced_id.expose()])
}

/// The octets an AUTH signature covers (RFC 7296 2.15): `<message> |
/// <peer's nonce> | prf(SK_p, <ID payload body>)`.
pub fn signed_octets(message: &[u8], peer_nonce: &[u8], sk_p: &Secret, id_body: &[u8]) -> Vec<u8> {
    let maced_id = prf(sk_p.expose(), &[id_body]);
    [message, peer_nonce, maced_id.expose()].concat()
}

/// One direction's ESP keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionKeys {
    /// Encryption key (without the salt).
    pub encryption: Secret,
    /// The AES-GCM salt (RFC 4106 8.1), empty otherwise.
    pub salt: Secret,
    /// Integrity key, empty with an AEAD.
    pub integrity: Secret,
}

/// A CHILD_SA's keys, by direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildKeys {
    /// Initiator to responder.
    pub initiator_to_responder: DirectionKeys,
    /// Responder to initiator.
    pub responder_to_initiator: DirectionKeys,
}

/// KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (RFC 7296 2.17), taken as
/// the initiator-to-responder encryption key (and its salt, RFC 4106 8.1),
/// integrity key, then the same for responder to initiator.
pub fn derive_child_keys(
    sk_d: &Secret,
    suite: &EspSuite,
    shared: Option<&Secret>,
    ni: &[u8],
    nr: &[u8],
) -> Result<ChildKeys, CryptoError> {
    let enc = suite.encryption.key_len();
    let salt = suite.encryption.salt_len();
    let integ = suite.integrity.map_or(0, Integrity::key_len);
    let seed = Zeroizing::new([shared.map_or(&[][..], Secret::expose), ni, nr].concat());
    let stream = prf_plus(sk_d.expose(), &seed, 2 * (enc + salt + integ))?;
    let s = stream.expose();
    let dir = |at: usize| DirectionKeys {
        encryption: Secret::new(s[at..at + enc].to_vec()),
        salt: Secret::new(s[at + enc..at + enc + salt].to_vec()),
        integrity: Secret::new(s[at + enc + salt..at + enc + salt + integ].to_vec()),
    };
    let half = enc + salt + integ;
    Ok(ChildKeys {
        initiator_to_responder: dir(0),
        responder_to_initiator: dir(half),
    })
}

/// Our half of a Diffie-Hellman exchange.
pub struct DhPrivate {
    group: DhGroup,
    key: agreement::EphemeralPrivateKey,
    public: Vec<u8>,
}

impl core::fmt::Debug for DhPrivate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DhPrivate")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl DhPrivate {
    /// A fresh private key of `group`.
    pub fn generate(group: DhGroup, rng: &dyn SecureRandom) -> Result<DhPrivate, CryptoError> {
        let alg = match group {
            DhGroup::Ecp256 => &agreement::ECDH_P256,
            DhGroup::Curve25519 => &agreement::X25519,
        };
        let key =
            agreement::EphemeralPrivateKey::generate(alg, rng).map_err(|_| CryptoError::Random)?;
        let public = key.compute_public_key().map_err(|_| CryptoError::Random)?;
        let public = match group {
            // RFC 5903 7: the KE payload carries x | y, without the
            // uncompressed-point octet 0x04 of SEC1.
            DhGroup::Ecp256 => public.as_ref()[1..].to_vec(),
            DhGroup::Curve25519 => public.as_ref().to_vec(),
        };
        Ok(DhPrivate { group, key, public })
    }

    /// The group.
    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// The KE payload's data.
    pub fn public_value(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret g^ir with the peer's KE data: the x coordinate for
    /// P-256 (RFC 5903 7), the X25519 output for Curve25519 (RFC 8031 2.1;
    /// ring refuses the all-zero output RFC 7748 6.1 warns of).
    pub fn agree(self, peer: &[u8]) -> Result<Secret, CryptoError> {
        let (alg, peer) = match self.group {
            DhGroup::Ecp256 => {
                if peer.len() != 64 {
                    return Err(CryptoError::InvalidPublicValue);
                }
                let mut p = Vec::with_capacity(65);
                p.push(0x04);
                p.extend_from_slice(peer);
                (&agreement::ECDH_P256, p)
            }
            DhGroup::Curve25519 => {
                if peer.len() != 32 {
                    return Err(CryptoError::InvalidPublicValue);
                }
                (&agreement::X25519, peer.to_vec())
            }
        };
        let peer = agreement::UnparsedPublicKey::new(alg, peer);
        agreement::agree_ephemeral(self.key, &peer, |s| Secret::new(s.to_vec()))
            .map_err(|_| CryptoError::InvalidPublicValue)
    }
}

/// Keys protecting the SK payloads one side sends (RFC 7296 3.14).
#[derive(Debug, Clone)]
pub struct SkKeys {
    encryption: Encryption,
    integrity: Option<Integrity>,
    /// Encryption key without the salt.
    key: Secret,
    salt: Secret,
    integ_key: Secret,
}

impl SkKeys {
    /// The keys of one direction: `sk_e` (with salt for GCM) and `sk_a`.
    pub fn new(suite: &IkeSuite, sk_e: &Secret, sk_a: &Secret) -> SkKeys {
        let n = suite.encryption.key_len();
        SkKeys {
            encryption: suite.encryption,
            integrity: suite.integrity,
            key: Secret::new(sk_e.expose()[..n].to_vec()),
            salt: Secret::new(sk_e.expose()[n..].to_vec()),
            integ_key: sk_a.clone(),
        }
    }

    fn iv_len(&self) -> usize {
        match self.encryption {
            Encryption::AesGcm16 { .. } => 8,
            Encryption::AesCbc { .. } => 16,
        }
    }

    fn icv_len(&self) -> usize {
        match self.integrity {
            Some(i) => i.icv_len(),
            None => 16,
        }
    }

    fn block_len(&self) -> usize {
        match self.encryption {
            // RFC 5282 3: no block alignment needed; the Pad Length octet
            // is still present.
            Encryption::AesGcm16 { .. } => 1,
            Encryption::AesCbc { .. } => 16,
        }
    }

    fn gcm(&self) -> Result<LessSafeKey, CryptoError> {
        let alg = if self.key.len() == 16 {
            &AES_128_GCM
        } else {
            &AES_256_GCM
        };
        UnboundKey::new(alg, self.key.expose())
            .map(LessSafeKey::new)
            .map_err(|_| CryptoError::MalformedSk)
    }

    fn mac(&self, data: &[u8]) -> [u8; 16] {
        let full = prf(self.integ_key.expose(), &[data]);
        let mut icv = [0u8; 16];
        icv.copy_from_slice(&full.expose()[..16]);
        icv
    }

    /// A whole message whose only payload is an SK payload holding the
    /// payload chain `inner` (first payload `first_inner`). `header`'s
    /// next payload and length are set here.
    pub fn seal(
        &self,
        header: &HeaderRepr,
        first_inner: PayloadType,
        inner: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, CryptoError> {
        let (iv_len, icv_len, block) = (self.iv_len(), self.icv_len(), self.block_len());
        let pad = (block - (inner.len() + 1) % block) % block;
        let plain_len = inner.len() + pad + 1;
        let sk_len = 4 + iv_len + plain_len + icv_len;
        let total = HEADER_LEN + sk_len;
        let mut msg = vec![0u8; total];
        let mut h = *header;
        h.next_payload = PayloadType::Sk;
        h.length = u32::try_from(total).map_err(|_| CryptoError::MalformedSk)?;
        h.emit(&mut crate::wire::Header::new_unchecked(
            &mut msg[..HEADER_LEN],
        ));
        msg[HEADER_LEN] = first_inner.into();
        let sk16 = u16::try_from(sk_len).map_err(|_| CryptoError::MalformedSk)?;
        msg[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&sk16.to_be_bytes());
        let iv_at = HEADER_LEN + 4;
        let plain_at = iv_at + iv_len;
        rng.fill(&mut msg[iv_at..plain_at])
            .map_err(|_| CryptoError::Random)?;
        msg[plain_at..plain_at + inner.len()].copy_from_slice(inner);
        msg[plain_at + plain_len - 1] = u8::try_from(pad).map_err(|_| CryptoError::MalformedSk)?;
        let icv_at = plain_at + plain_len;
        match self.encryption {
            Encryption::AesGcm16 { .. } => {
                let nonce = self.nonce(&msg[iv_at..plain_at])?;
                let (aad, rest) = msg.split_at_mut(iv_at);
                let tag = self
                    .gcm()?
                    .seal_in_place_separate_tag(
                        nonce,
                        Aad::from(&aad[..]),
                        &mut rest[iv_len..iv_len + plain_len],
                    )
                    .map_err(|_| CryptoError::MalformedSk)?;
                msg[icv_at..].copy_from_slice(tag.as_ref());
            }
            Encryption::AesCbc { .. } => {
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&msg[iv_at..plain_at]);
                cbc_encrypt(self.key.expose(), &iv, &mut msg[plain_at..icv_at])?;
                let icv = self.mac(&msg[..icv_at]);
                msg[icv_at..].copy_from_slice(&icv);
            }
        }
        Ok(msg)
    }

    fn nonce(&self, iv: &[u8]) -> Result<Nonce, CryptoError> {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(self.salt.expose());
        n[4..].copy_from_slice(iv);
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// Verifies and decrypts the SK payload whose body starts at
    /// `body_at` in `msg` and runs to its end (the SK payload is the last
    /// one). Returns the inner payload chain's octets.
    pub fn open(&self, msg: &[u8], body_at: usize) -> Result<Vec<u8>, CryptoError> {
        let (iv_len, icv_len) = (self.iv_len(), self.icv_len());
        let body_len = msg.len().saturating_sub(body_at);
        if body_at > msg.len() || body_len < iv_len + icv_len + 1 {
            return Err(CryptoError::MalformedSk);
        }
        let plain_at = body_at + iv_len;
        let icv_at = msg.len() - icv_len;
        let mut data = Zeroizing::new(msg[plain_at..icv_at].to_vec());
        match self.encryption {
            Encryption::AesGcm16 { .. } => {
                data.extend_from_slice(&msg[icv_at..]);
                let nonce = self.nonce(&msg[body_at..plain_at])?;
                let n = self
                    .gcm()?
                    .open_in_place(nonce, Aad::from(&msg[..body_at]), &mut data)
                    .map_err(|_| CryptoError::IntegrityCheckFailed)?
                    .len();
                data.truncate(n);
            }
            Encryption::AesCbc { .. } => {
                let icv = self.mac(&msg[..icv_at]);
                if !bool::from(icv.ct_eq(&msg[icv_at..])) {
                    return Err(CryptoError::IntegrityCheckFailed);
                }
                if !data.len().is_multiple_of(16) {
                    return Err(CryptoError::MalformedSk);
                }
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&msg[body_at..plain_at]);
                cbc_decrypt(self.key.expose(), &iv, &mut data)?;
            }
        }
        let pad = usize::from(*data.last().ok_or(CryptoError::MalformedSk)?);
        if pad + 1 > data.len() {
            return Err(CryptoError::MalformedSk);
        }
        let inner = data.len() - pad - 1;
        Ok(data[..inner].to_vec())
    }
}

fn cbc_encrypt(key: &[u8], iv: &[u8; 16], buf: &mut [u8]) -> Result<(), CryptoError> {
    let n = buf.len();
    let r = match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::MalformedSk)?
            .encrypt_padded_mut::<NoPadding>(buf, n)
            .map(|_| ()),
        _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::MalformedSk)?
            .encrypt_padded_mut::<NoPadding>(buf, n)
            .map(|_| ()),
    };
    r.map_err(|_| CryptoError::MalformedSk)
}

fn cbc_decrypt(key: &[u8], iv: &[u8; 16], buf: &mut [u8]) -> Result<(), CryptoError> {
    let r = match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::MalformedSk)?
            .decrypt_padded_mut::<NoPadding>(buf)
            .map(|_| ()),
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(|_| CryptoError::MalformedSk)?
            .decrypt_padded_mut::<NoPadding>(buf)
            .map(|_| ()),
    };
    r.map_err(|_| CryptoError::MalformedSk)
}

/// The NAT_DETECTION_*_IP data (RFC 7296 2.23): SHA-1(SPIi | SPIr | IP |
/// port), with SPIr zero in the first IKE_SA_INIT request.
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, addr: std::net::SocketAddr) -> [u8; 20] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        std::net::IpAddr::V4(a) => ctx.update(&a.octets()),
        std::net::IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A stateless cookie (RFC 7296 2.6): `<version> | HMAC-SHA-256(secret,
/// Ni | IPi | SPIi)`. The version octet names the secret so that one can
/// be rotated later; an endpoint keeps one secret for its lifetime now.
pub fn cookie(
    secret: &Secret,
    version: u8,
    ni: &[u8],
    ip: std::net::IpAddr,
    spi_i: u64,
) -> Vec<u8> {
    let ip = match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mac = prf(secret.expose(), &[ni, &ip, &spi_i.to_be_bytes()]);
    let mut out = vec![version];
    out.extend_from_slice(mac.expose());
    out
}

/// Whether two byte strings are equal, in constant time.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::Prf;
    use ring::rand::SystemRandom;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    /// RFC 4231 4.2 and 4.3 (test cases 1 and 2), HMAC-SHA-256.
    #[test]
    fn prf_is_hmac_sha256_rfc4231() {
        assert_eq!(
            prf(&[0x0b; 20], &[b"Hi There"]).expose(),
            h("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        assert_eq!(
            prf(b"Jefe", &[b"what do ya want ", b"for nothing?"]).expose(),
            h("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    /// prf+ is the chain of RFC 7296 2.13, checked block by block against
    /// HMAC-SHA-256 from the RustCrypto crates (an independent
    /// implementation), across the 255-block limit.
    #[test]
    fn prf_plus_chains_blocks() {
        use hmac::{Hmac, Mac};
        let key = b"key";
        let seed = b"seed material";
        let out = prf_plus(key, seed, 100).unwrap();
        let mut prev: Vec<u8> = Vec::new();
        let mut expect = Vec::new();
        for n in 1u8..=4 {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            m.update(&prev);
            m.update(seed);
            m.update(&[n]);
            prev = m.finalize().into_bytes().to_vec();
            expect.extend_from_slice(&prev);
        }
        assert_eq!(out.expose(), &expect[..100]);
        assert!(prf_plus(key, seed, 255 * 32).is_ok());
        assert_eq!(
            prf_plus(key, seed, 255 * 32 + 1).unwrap_err(),
            CryptoError::PrfPlusTooLong
        );
    }

    /// NIST's IKEv2 KDF sample with HMAC-SHA-256 (CAVS, SP 800-135; as
    /// carried by NSS's test vectors): SKEYSEED from g^ir and the nonces,
    /// 132 octets of prf+ over Ni | Nr | SPIi | SPIr, and the SKEYSEED of
    /// a rekey from the old SK_d.
    const NIST_NI: &str = "3f302be1abcb28e1";
    const NIST_NR: &str = "8c332ee006064c9b";
    const NIST_SPI_I: u64 = 0x40da_c39e_1e1a_8640;
    const NIST_SPI_R: u64 = 0x8619_a1cf_9a6e_4c07;
    const NIST_GIR: &str = "0f4d257d7a58fc4545c7d7a88119eee5d5c9690c5b4c989171d3abbfd99d1d29";
    const NIST_SKEYSEED: &str = "5f00d1bd2c58ec224b1e6b71fa0f19a1faa7a193952c444411b47c1a9d8ba6fe";
    const NIST_PRF_PLUS: &str = "0b137d669b0947d7d026d593f0305ad401ff0c471357d695778a9c7f4b4869ec
        e98aca531188d16041b3bb936d2dbb3b4993a6e768a809160de45d0283f273a6
        cdf6854379e31be72b8d3d1fa990cf9c5b015ca9f918a7df6253c958114a09d4
        e1c19bdcd4db14b29d98db1a74ad405c588662c14a04d0d36aa4ab55e90f8986d12d4aad";
    const NIST_GIR_NEW: &str = "25f3b12d6f282739256e39bf54eda53b60ffcf379bb7bcc90c27b4c4c578616c";
    const NIST_SKEYSEED_REKEY: &str =
        "2d63f6debc92048b4fef3889c4c99ca67d6496e0fac14a2bca9a2d6566ff2398";

    #[test]
    fn ikev2_kdf_known_answers_nist() {
        let (ni, nr) = (h(NIST_NI), h(NIST_NR));
        let nonces = [ni.clone(), nr.clone()].concat();
        let skeyseed = prf(&nonces, &[&h(NIST_GIR)]);
        assert_eq!(skeyseed.expose(), h(NIST_SKEYSEED));
        let seed = [
            &ni[..],
            &nr[..],
            &NIST_SPI_I.to_be_bytes(),
            &NIST_SPI_R.to_be_bytes(),
        ]
        .concat();
        let stream = h(NIST_PRF_PLUS);
        assert_eq!(stream.len(), 132);
        for len in [15, 32, 132] {
            let out = prf_plus(&h(NIST_SKEYSEED), &seed, len).unwrap();
            assert_eq!(out.expose(), &stream[..len]);
        }
        // derive_ike_keys takes the SK_* keys from that stream in order:
        // AES-CBC-128 with HMAC-SHA-256-128 uses 32+32+32+16+16+32+32.
        let suite = suite(Encryption::AES128_CBC);
        let shared = Secret::new(h(NIST_GIR));
        let keys = derive_ike_keys(&suite, &ni, &nr, &shared, NIST_SPI_I, NIST_SPI_R).unwrap();
        assert_eq!(keys.sk_d.expose(), &stream[..32]);
        assert_eq!(keys.sk_ai.expose(), &stream[32..64]);
        assert_eq!(keys.sk_ar.expose(), &stream[64..96]);
        assert_eq!(keys.sk_ei.expose(), &stream[96..112]);
        assert_eq!(keys.sk_er.expose(), &stream[112..128]);
        // Rekey (RFC 7296 2.18): SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr).
        let rekey = prf(keys.sk_d.expose(), &[&h(NIST_GIR_NEW), &ni, &nr]);
        assert_eq!(rekey.expose(), h(NIST_SKEYSEED_REKEY));
        let new = derive_rekeyed_ike_keys(
            &suite,
            &keys.sk_d,
            &ni,
            &nr,
            &Secret::new(h(NIST_GIR_NEW)),
            NIST_SPI_I,
            NIST_SPI_R,
        )
        .unwrap();
        let expect = prf_plus(&h(NIST_SKEYSEED_REKEY), &seed, 32).unwrap();
        assert_eq!(new.sk_d, expect);
    }

    /// The GCM specification's test case 4 (McGrew and Viega): AES-128,
    /// 12-octet nonce (salt cafebabe, IV facedbaddecaf888), 20 octets of
    /// AAD, 60 of plaintext; here through the SK payload's nonce layout.
    #[test]
    fn aes_gcm_known_answer() {
        let key = h("feffe9928665731c6d6a8f9467308308");
        let keys = SkKeys {
            encryption: Encryption::AES128_GCM16,
            integrity: None,
            key: Secret::new(key),
            salt: Secret::new(h("cafebabe")),
            integ_key: Secret::default(),
        };
        let nonce = keys.nonce(&h("facedbaddecaf888")).unwrap();
        let mut data = h(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let tag = keys
            .gcm()
            .unwrap()
            .seal_in_place_separate_tag(nonce, Aad::from(&aad[..]), &mut data)
            .unwrap();
        assert_eq!(
            data,
            h(
                "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e
               21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
            )
        );
        assert_eq!(tag.as_ref(), &h("5bc94fbc3221a5db94fae95ae7121a47")[..]);
    }

    fn suite(encryption: Encryption) -> IkeSuite {
        IkeSuite {
            encryption,
            integrity: (!encryption.is_aead()).then_some(Integrity::HmacSha256_128),
            prf: Prf::HmacSha256,
            group: DhGroup::Curve25519,
        }
    }

    #[test]
    fn sk_payload_round_trips_and_detects_tampering() {
        let rng = SystemRandom::new();
        for enc in [
            Encryption::AES128_GCM16,
            Encryption::AES256_GCM16,
            Encryption::AES128_CBC,
            Encryption::AES256_CBC,
        ] {
            let s = suite(enc);
            let e = Secret::new(vec![7; enc.key_len() + enc.salt_len()]);
            let a = Secret::new(vec![9; s.integrity.map_or(0, Integrity::key_len)]);
            let keys = SkKeys::new(&s, &e, &a);
            let header = HeaderRepr {
                spi_i: 1,
                spi_r: 2,
                next_payload: PayloadType::Sk,
                minor_version: 0,
                exchange: crate::wire::ExchangeType::IkeAuth,
                flags: crate::wire::Flags::new(true, false),
                message_id: 1,
                length: 0,
            };
            let inner = b"inner payload chain of 37 octets.....";
            let msg = keys.seal(&header, PayloadType::IdI, inner, &rng).unwrap();
            let parsed = crate::wire::Message::parse(&msg).unwrap();
            assert_eq!(parsed.header.length as usize, msg.len());
            assert_eq!(keys.open(&msg, HEADER_LEN + 4).unwrap(), inner);
            for at in [0, 20, HEADER_LEN + 1, HEADER_LEN + 6, msg.len() - 1] {
                let mut bad = msg.clone();
                bad[at] ^= 1;
                assert_eq!(
                    keys.open(&bad, HEADER_LEN + 4).unwrap_err(),
                    CryptoError::IntegrityCheckFailed,
                    "{enc:?} flip at {at}"
                );
            }
            assert!(keys.open(&msg[..HEADER_LEN + 10], HEADER_LEN + 4).is_err());
        }
    }

    #[test]
    fn dh_both_groups_agree_and_refuse_bad_points() {
        let rng = SystemRandom::new();
        for g in [DhGroup::Ecp256, DhGroup::Curve25519] {
            let a = DhPrivate::generate(g, &rng).unwrap();
            let b = DhPrivate::generate(g, &rng).unwrap();
            let (pa, pb) = (a.public_value().to_vec(), b.public_value().to_vec());
            assert_eq!(pa.len(), if g == DhGroup::Ecp256 { 64 } else { 32 });
            let sa = a.agree(&pb).unwrap();
            let sb = b.agree(&pa).unwrap();
            assert_eq!(sa, sb);
            assert_eq!(sa.len(), 32);
            let c = DhPrivate::generate(g, &rng).unwrap();
            assert!(c.agree(&pa[1..]).is_err());
        }
        // RFC 7748 6.1 / RFC 8031 2.3: a low-order point gives the all-zero
        // output, which must be refused.
        let c = DhPrivate::generate(DhGroup::Curve25519, &rng).unwrap();
        assert_eq!(
            c.agree(&[0; 32]).unwrap_err(),
            CryptoError::InvalidPublicValue
        );
        // Not on the curve.
        let c = DhPrivate::generate(DhGroup::Ecp256, &rng).unwrap();
        assert_eq!(
            c.agree(&[1; 64]).unwrap_err(),
            CryptoError::InvalidPublicValue
        );
    }

    #[test]
    fn child_keys_split_with_the_gcm_salt() {
        let sk_d = Secret::new(vec![1; 32]);
        let suite = EspSuite {
            encryption: Encryption::AES128_GCM16,
            integrity: None,
            group: None,
        };
        let k = derive_child_keys(&sk_d, &suite, None, &[2; 32], &[3; 32]).unwrap();
        let stream = prf_plus(&[1; 32], &[[2u8; 32], [3; 32]].concat(), 40).unwrap();
        let s = stream.expose();
        assert_eq!(k.initiator_to_responder.encryption.expose(), &s[..16]);
        assert_eq!(k.initiator_to_responder.salt.expose(), &s[16..20]);
        assert_eq!(k.responder_to_initiator.encryption.expose(), &s[20..36]);
        assert_eq!(k.responder_to_initiator.salt.expose(), &s[36..40]);
        assert!(k.initiator_to_responder.integrity.is_empty());
        assert!(format!("{k:?}").contains("masked"));
    }
}
