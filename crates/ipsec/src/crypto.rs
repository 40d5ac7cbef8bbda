//! The ESP transforms of one SA (RFC 4303 section 2 and 3.3.2), applied in
//! place on an ESP packet.
//!
//! A [`Transform`] is built once per SA from its keying material; all key
//! schedules (AES round keys, the GHASH key, the pre-keyed HMAC state) are
//! computed in [`Transform::new`]. [`Transform::seal`] and
//! [`Transform::open`] then work on the caller's buffer without allocating.
//!
//! The buffer passed to `seal`/`open` is the whole ESP packet from the SPI to
//! the end of the ICV (RFC 4303 section 2, figure 1):
//!
//! ```text
//! [SPI 4][Seq 4][IV iv_len][payload | padding | pad len | next hdr][ICV 16]
//!                          '---------- "payload region" ----------'
//! ```
//!
//! Supported transforms:
//! - AES-GCM with a 16-octet ICV (RFC 4106), two interchangeable backends
//!   ([`GcmBackend`]);
//! - AES-GMAC, ENCR_NULL_AUTH_AES_GMAC (RFC 4543): authentication only;
//! - ChaCha20-Poly1305 (RFC 7634), on ring;
//! - AES-CBC (RFC 3602) with HMAC-SHA-256-128 (RFC 4868);
//! - NULL encryption (RFC 2410) with HMAC-SHA-256-128 (RFC 4868).
//!
//! Key hygiene: the salt and the AES key schedules (RustCrypto `aes` built
//! with its `zeroize` feature, which GCM, GMAC and CBC use) are zeroized on
//! drop. ring's key objects and the `hmac` crate's pre-keyed SHA-256 states
//! offer no zeroization hook, and this crate forbids `unsafe`, so those
//! derived states are not wiped; the raw key bytes are never stored.

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

mod aead;
mod cbc_hmac;

use aead::{aead_aad, gmac, AeadKey};
use cbc_hmac::{hmac_icv, hmac_key, CbcKeys, HmacSha256};

pub use bitsgw_wire::esp::ESP_HEADER_LEN;

/// ICV length of every supported transform, in octets.
pub const ICV_LEN: usize = 16;

pub use bitsgw_wire::esp::ESP_TRAILER_LEN as TRAILER_LEN;

/// Length of the salt that ends the `enc_key` of the GCM, GMAC and
/// ChaCha20-Poly1305 transforms (RFC 4106 section 8.1, RFC 4543 section 8.1,
/// RFC 7634 section 2).
const SALT_LEN: usize = 4;

/// Which transform (algorithm suite) an SA uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransformId {
    /// AES-GCM, 128-bit key, 16-octet ICV (RFC 4106).
    AesGcm128,
    /// AES-GCM, 256-bit key, 16-octet ICV (RFC 4106).
    AesGcm256,
    /// AES-CBC, 128-bit key (RFC 3602), with HMAC-SHA-256-128 (RFC 4868).
    AesCbc128HmacSha256,
    /// AES-CBC, 256-bit key (RFC 3602), with HMAC-SHA-256-128 (RFC 4868).
    AesCbc256HmacSha256,
    /// NULL encryption (RFC 2410) with HMAC-SHA-256-128 (RFC 4868).
    NullHmacSha256,
    /// ChaCha20-Poly1305 (RFC 7634).
    ChaCha20Poly1305,
    /// AES-GMAC, 128-bit key, ENCR_NULL_AUTH_AES_GMAC (RFC 4543).
    AesGmac128,
    /// AES-GMAC, 256-bit key, ENCR_NULL_AUTH_AES_GMAC (RFC 4543).
    AesGmac256,
}

impl TransformId {
    /// Every transform, in declaration order.
    pub const ALL: [TransformId; 8] = [
        TransformId::AesGcm128,
        TransformId::AesGcm256,
        TransformId::AesCbc128HmacSha256,
        TransformId::AesCbc256HmacSha256,
        TransformId::NullHmacSha256,
        TransformId::ChaCha20Poly1305,
        TransformId::AesGmac128,
        TransformId::AesGmac256,
    ];

    /// The name used in configuration files and output.
    pub fn name(self) -> &'static str {
        match self {
            TransformId::AesGcm128 => "aes-gcm-128",
            TransformId::AesGcm256 => "aes-gcm-256",
            TransformId::AesCbc128HmacSha256 => "aes-cbc-128-hmac-sha256",
            TransformId::AesCbc256HmacSha256 => "aes-cbc-256-hmac-sha256",
            TransformId::NullHmacSha256 => "null-hmac-sha256",
            TransformId::ChaCha20Poly1305 => "chacha20-poly1305",
            TransformId::AesGmac128 => "aes-gmac-128",
            TransformId::AesGmac256 => "aes-gmac-256",
        }
    }

    /// The inverse of [`TransformId::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Length in octets of the `enc_key` configuration field.
    ///
    /// GCM and GMAC: AES key followed by a 4-octet salt (RFC 4106 section 8.1,
    /// RFC 4543 section 8.1); ChaCha20-Poly1305: 32-octet key and 4-octet
    /// salt (RFC 7634 section 2); CBC: the AES key; NULL: none.
    pub fn enc_key_len(self) -> usize {
        match self {
            TransformId::AesGcm128 | TransformId::AesGmac128 => 16 + SALT_LEN,
            TransformId::AesGcm256 | TransformId::AesGmac256 | TransformId::ChaCha20Poly1305 => {
                32 + SALT_LEN
            }
            TransformId::AesCbc128HmacSha256 => 16,
            TransformId::AesCbc256HmacSha256 => 32,
            TransformId::NullHmacSha256 => 0,
        }
    }

    /// Length in octets of the `auth_key` configuration field: 32 for
    /// HMAC-SHA-256-128 (RFC 4868 section 2.1.1), 0 for the combined-mode
    /// transforms.
    pub fn auth_key_len(self) -> usize {
        match self {
            TransformId::AesCbc128HmacSha256
            | TransformId::AesCbc256HmacSha256
            | TransformId::NullHmacSha256 => 32,
            _ => 0,
        }
    }

    /// Length of the explicit IV carried in each packet: 8 for GCM, GMAC and
    /// ChaCha20-Poly1305 (RFC 4106 section 3.1, RFC 4543 section 3.1,
    /// RFC 7634 section 2), 16 for CBC (RFC 3602 section 2.1), 0 for NULL.
    pub fn iv_len(self) -> usize {
        match self {
            TransformId::AesCbc128HmacSha256 | TransformId::AesCbc256HmacSha256 => 16,
            TransformId::NullHmacSha256 => 0,
            _ => 8,
        }
    }

    /// Length of the ICV: 16 for every supported transform.
    pub fn icv_len(self) -> usize {
        ICV_LEN
    }

    /// Alignment that payload, padding and the 2-octet trailer together must
    /// reach (RFC 4303 section 2.4): the cipher block (16) for CBC
    /// (RFC 3602 section 3), 4 otherwise.
    pub fn block_align(self) -> usize {
        match self {
            TransformId::AesCbc128HmacSha256 | TransformId::AesCbc256HmacSha256 => 16,
            _ => 4,
        }
    }

    /// Number of padding octets (RFC 4303 section 2.4) to put after a payload
    /// of `payload_len` octets so that payload, padding and the 2-octet
    /// trailer end on [`TransformId::block_align`].
    pub fn pad_len(self, payload_len: usize) -> usize {
        let align = self.block_align();
        (align - (payload_len + TRAILER_LEN) % align) % align
    }

    /// Whether this is a combined-mode transform (integrity from the cipher
    /// itself, no separate integrity algorithm): GCM, GMAC, ChaCha20-Poly1305.
    pub fn is_aead(self) -> bool {
        matches!(
            self,
            TransformId::AesGcm128
                | TransformId::AesGcm256
                | TransformId::ChaCha20Poly1305
                | TransformId::AesGmac128
                | TransformId::AesGmac256
        )
    }

    /// Whether the payload is encrypted: false for NULL and GMAC, whose
    /// payload travels in clear.
    pub fn encrypts(self) -> bool {
        !matches!(
            self,
            TransformId::NullHmacSha256 | TransformId::AesGmac128 | TransformId::AesGmac256
        )
    }

    /// Whether the IV is the sequence number, so that a (key, sequence
    /// number) pair used twice is a reused nonce: GCM (RFC 4106 section
    /// 8.1), GMAC (RFC 4543 section 8) and ChaCha20-Poly1305 (RFC 7634
    /// section 4), which those RFCs therefore forbid with static keys.
    pub fn has_counter_nonce(self) -> bool {
        self.is_aead()
    }

    /// The RFC that forbids this transform with statically configured keys
    /// (see [`TransformId::has_counter_nonce`]).
    pub fn static_key_rfc(self) -> Option<&'static str> {
        match self {
            TransformId::AesGcm128 | TransformId::AesGcm256 => Some("RFC 4106 section 8.1"),
            TransformId::AesGmac128 | TransformId::AesGmac256 => Some("RFC 4543 section 8"),
            TransformId::ChaCha20Poly1305 => Some("RFC 7634 section 4"),
            _ => None,
        }
    }

    fn is_cbc(self) -> bool {
        matches!(
            self,
            TransformId::AesCbc128HmacSha256 | TransformId::AesCbc256HmacSha256
        )
    }
}

impl fmt::Display for TransformId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// AES-GCM implementation choice (ring or RustCrypto `aes-gcm`), selectable
/// per SA. Each is a differential check of the other.
///
/// The backend applies to AES-GCM and AES-GMAC. ChaCha20-Poly1305 always
/// uses ring, and CBC and NULL use RustCrypto `aes`, `cbc` and `hmac`; for
/// those the backend is recorded but has no effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GcmBackend {
    /// ring's `LessSafeKey`; the default, chosen by measurement: on the
    /// machines bitsgw runs on (x86-64 with VAES and VPCLMULQDQ) it sealed
    /// 64 to 9000 octets in 0.15 to 0.62 of RustCrypto's time
    /// (BENCHMARKS.md, `cargo bench --bench esp`).
    #[default]
    Ring,
    /// RustCrypto `aes-gcm`.
    RustCrypto,
}

impl GcmBackend {
    /// Every backend.
    pub const ALL: [GcmBackend; 2] = [GcmBackend::Ring, GcmBackend::RustCrypto];

    /// The name used in configuration files and output.
    pub fn name(self) -> &'static str {
        match self {
            GcmBackend::Ring => "ring",
            GcmBackend::RustCrypto => "rustcrypto",
        }
    }

    /// The inverse of [`GcmBackend::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == s)
    }
}

impl fmt::Display for GcmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the ESP transforms.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The `enc_key` has the wrong length for the transform.
    #[error("encryption key is {got} octets, the transform needs {expected}")]
    KeyLength {
        /// Length the transform needs.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// The `auth_key` has the wrong length for the transform.
    #[error("authentication key is {got} octets, the transform needs {expected}")]
    AuthKeyLength {
        /// Length the transform needs.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// The ICV did not verify (RFC 4303 section 3.4.4): the packet must be
    /// dropped.
    #[error("integrity check failed")]
    IntegrityCheckFailed,
    /// The buffer cannot hold the ESP header, the IV, the 2-octet trailer
    /// and the ICV.
    #[error("ESP packet too short for the transform")]
    TooShort,
    /// The CBC payload region is not a multiple of the cipher block
    /// (RFC 3602 section 3).
    #[error("encrypted region is not a multiple of the cipher block")]
    Misaligned,
    /// The low 32 bits of the `seq` argument differ from the packet's
    /// Sequence Number field.
    #[error("sequence number does not match the packet's Sequence Number field")]
    SeqMismatch,
    /// The payload exceeds what the cipher can process under one nonce.
    #[error("payload too long for the cipher")]
    TooLong,
}

/// The keyed state of a transform.
// One value per SA, and keeping the schedules inline spares a pointer chase
// per packet, so the variants' size difference is accepted.
#[allow(clippy::large_enum_variant)]
enum Keys {
    /// GCM, GMAC or ChaCha20-Poly1305.
    Aead(AeadKey),
    /// AES-CBC with HMAC-SHA-256-128.
    Cbc { cipher: CbcKeys, mac: HmacSha256 },
    /// NULL with HMAC-SHA-256-128.
    Null { mac: HmacSha256 },
}

/// A keyed ESP transform: the cryptographic half of one SA.
///
/// ## IVs
/// - GCM, GMAC and ChaCha20-Poly1305 use the 64-bit sequence number, big
///   endian, as the 8-octet IV. RFC 4106 section 3.1 (and RFC 4543
///   section 3.1, RFC 7634 section 2) require only that an IV never repeats
///   under one key and allow a counter; the sequence number never repeats
///   within an SA because the SA must be rekeyed before it cycles
///   (RFC 4303 section 3.3.3). With static keys the SA outlives the process,
///   so the appliance leases sequence numbers ahead in a state file
///   ([`crate::stage::IpsecStage::grant_lease`]): a restart resumes above
///   every number ever sent under the key.
/// - AES-CBC needs an IV the attacker cannot predict (RFC 3602 section 2.1;
///   a predictable IV allows chosen-plaintext attacks on CBC). Each IV is
///   `AES_Kiv(0^64 || seq)` where `Kiv` is HKDF-SHA-256 (RFC 5869) of the
///   encryption key with info `"bitsgw esp aes-cbc iv key v2"`, truncated
///   to the AES key length and derived once in [`Transform::new`]. `Kiv`
///   is a PRF output under the secret encryption
///   key, so it is itself secret and independent of the data key; AES under
///   a secret key is a pseudorandom permutation, so its outputs on the
///   distinct inputs `seq` are indistinguishable from random blocks to anyone
///   without the key: they are unpredictable even though `seq` is public, and
///   never repeat within the SA. This is the "encrypt a nonce" method of
///   NIST SP 800-38A Appendix C, with a separate key so no IV equals an
///   intermediate value of the data encryption. It is kept (rather than
///   IVs from a random generator) because it needs no entropy source in
///   this sans-IO core, keeps `bitsgw replay` byte-identical, and costs one
///   block encryption; its one requirement, that `seq` never repeats under
///   a key, is the same sequence lease the AEADs rely on.
///
/// `Debug` prints the transform and backend names and masks the keys.
pub struct Transform {
    id: TransformId,
    backend: GcmBackend,
    salt: [u8; SALT_LEN],
    keys: Keys,
}

impl fmt::Debug for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transform")
            .field("id", &format_args!("{}", self.id.name()))
            .field("backend", &format_args!("{}", self.backend.name()))
            .field("key", &format_args!("<masked>"))
            .finish()
    }
}

impl Drop for Transform {
    fn drop(&mut self) {
        // The AES schedules zeroize themselves; see the module documentation
        // for the states that cannot be wiped.
        self.salt.zeroize();
    }
}

impl Transform {
    /// Builds the transform of an SA from its keying material, computing all
    /// key schedules once.
    ///
    /// `enc_key` is [`TransformId::enc_key_len`] octets (for GCM, GMAC and
    /// ChaCha20-Poly1305 the cipher key followed by the 4-octet salt,
    /// RFC 4106 section 8.1); `auth_key` is [`TransformId::auth_key_len`]
    /// octets.
    pub fn new(
        id: TransformId,
        backend: GcmBackend,
        enc_key: &[u8],
        auth_key: &[u8],
    ) -> Result<Self, CryptoError> {
        if enc_key.len() != id.enc_key_len() {
            return Err(CryptoError::KeyLength {
                expected: id.enc_key_len(),
                got: enc_key.len(),
            });
        }
        if auth_key.len() != id.auth_key_len() {
            return Err(CryptoError::AuthKeyLength {
                expected: id.auth_key_len(),
                got: auth_key.len(),
            });
        }
        let mut salt = [0u8; SALT_LEN];
        let keys = match id {
            TransformId::AesGcm128
            | TransformId::AesGcm256
            | TransformId::AesGmac128
            | TransformId::AesGmac256 => {
                let (key, s) = enc_key.split_at(enc_key.len() - SALT_LEN);
                salt.copy_from_slice(s);
                Keys::Aead(AeadKey::aes_gcm(backend, key)?)
            }
            TransformId::ChaCha20Poly1305 => {
                let (key, s) = enc_key.split_at(enc_key.len() - SALT_LEN);
                salt.copy_from_slice(s);
                Keys::Aead(AeadKey::ring(&ring::aead::CHACHA20_POLY1305, key)?)
            }
            TransformId::AesCbc128HmacSha256 | TransformId::AesCbc256HmacSha256 => Keys::Cbc {
                cipher: CbcKeys::new(enc_key)?,
                mac: hmac_key(auth_key)?,
            },
            TransformId::NullHmacSha256 => Keys::Null {
                mac: hmac_key(auth_key)?,
            },
        };
        Ok(Transform {
            id,
            backend,
            salt,
            keys,
        })
    }

    /// The transform.
    pub fn id(&self) -> TransformId {
        self.id
    }

    /// The GCM backend chosen for this SA (see [`GcmBackend`] for which
    /// transforms it affects).
    pub fn backend(&self) -> GcmBackend {
        self.backend
    }

    /// Protects an outbound ESP packet in place (RFC 4303 section 3.3).
    ///
    /// `esp` is the whole ESP packet from the SPI to the end of the ICV:
    /// `[SPI 4][Seq 4][IV iv_len][payload | padding | pad len | next hdr][ICV
    /// icv_len]`, with SPI, Seq and the payload region filled in by the
    /// caller and the ICV space's contents ignored. Writes the IV, encrypts
    /// the payload region in place (unless the transform does not encrypt)
    /// and writes the ICV.
    ///
    /// `seq` is the full 64-bit sequence number; its low 32 bits must equal
    /// the Seq field ([`CryptoError::SeqMismatch`] otherwise). With `esn`,
    /// its high 32 bits are authenticated as RFC 4303 section 2.2.1 says:
    /// in the AAD of GCM and ChaCha20-Poly1305 (RFC 4106 section 5, RFC 7634
    /// section 2.1), in the GMAC AAD (RFC 4543 section 3.3), appended to the
    /// HMAC input (RFC 4303 section 3.3.2.2.1).
    pub fn seal(&self, esp: &mut [u8], seq: u64, esn: bool) -> Result<(), CryptoError> {
        let (ps, icv) = self.regions(esp.len())?;
        check_seq(esp, seq)?;
        match &self.keys {
            Keys::Aead(_) => esp[ESP_HEADER_LEN..ps].copy_from_slice(&seq.to_be_bytes()),
            Keys::Cbc { cipher, .. } => esp[ESP_HEADER_LEN..ps].copy_from_slice(&cipher.iv(seq)),
            Keys::Null { .. } => {}
        }
        self.seal_with_iv(esp, ps, icv, seq, esn)
    }

    /// Verifies the ICV of an inbound ESP packet (constant time) and decrypts
    /// its payload region in place (RFC 4303 section 3.4.4).
    ///
    /// `esp`, `seq` and `esn` are as for [`Transform::seal`]; with ESN, `seq`
    /// carries the receiver's inference of the high 32 bits
    /// (RFC 4303 appendix A2). Integrity is verified before anything is
    /// decrypted (CBC, NULL), or by the AEAD before its output is accepted;
    /// on [`CryptoError::IntegrityCheckFailed`] the payload region of an
    /// encrypting transform is zeroed, so no unauthenticated plaintext is
    /// left in the buffer.
    pub fn open(&self, esp: &mut [u8], seq: u64, esn: bool) -> Result<(), CryptoError> {
        let (ps, icv) = self.regions(esp.len())?;
        check_seq(esp, seq)?;
        let mut tag = [0u8; ICV_LEN];
        tag.copy_from_slice(&esp[icv..]);
        match &self.keys {
            Keys::Aead(key) if self.id.encrypts() => {
                let nonce = self.nonce(esp);
                let (aad, aad_len) = aead_aad(esp, seq, esn);
                let r = key.open(&nonce, &aad[..aad_len], &mut esp[ps..icv], &tag);
                if r.is_err() {
                    esp[ps..icv].fill(0);
                }
                r
            }
            Keys::Aead(key) => {
                let nonce = self.nonce(esp);
                let expected = gmac(key, esp, icv, &nonce, seq, esn);
                // The ESN path of `gmac` borrowed the ICV space.
                esp[icv..].copy_from_slice(&tag);
                verify(&expected?, &tag)
            }
            Keys::Cbc { cipher, mac } => {
                verify(&hmac_icv(mac, &esp[..icv], seq, esn), &tag)?;
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&esp[ESP_HEADER_LEN..ps]);
                cipher.decrypt(&iv, &mut esp[ps..icv])
            }
            Keys::Null { mac } => verify(&hmac_icv(mac, &esp[..icv], seq, esn), &tag),
        }
    }

    /// [`Transform::seal`] with the IV already in the packet (lets the
    /// known-answer tests use the IVs of published vectors).
    fn seal_with_iv(
        &self,
        esp: &mut [u8],
        ps: usize,
        icv: usize,
        seq: u64,
        esn: bool,
    ) -> Result<(), CryptoError> {
        let tag = match &self.keys {
            Keys::Aead(key) if self.id.encrypts() => {
                let nonce = self.nonce(esp);
                let (aad, aad_len) = aead_aad(esp, seq, esn);
                key.seal(&nonce, &aad[..aad_len], &mut esp[ps..icv])?
            }
            Keys::Aead(key) => {
                let nonce = self.nonce(esp);
                gmac(key, esp, icv, &nonce, seq, esn)?
            }
            Keys::Cbc { cipher, mac } => {
                let mut iv = [0u8; 16];
                iv.copy_from_slice(&esp[ESP_HEADER_LEN..ps]);
                cipher.encrypt(&iv, &mut esp[ps..icv])?;
                hmac_icv(mac, &esp[..icv], seq, esn)
            }
            Keys::Null { mac } => hmac_icv(mac, &esp[..icv], seq, esn),
        };
        esp[icv..].copy_from_slice(&tag);
        Ok(())
    }

    /// Start of the payload region and start of the ICV, after checking the
    /// length (RFC 4303 section 2: header, IV, at least the 2-octet trailer,
    /// ICV) and, for CBC, the block alignment (RFC 3602 section 3).
    fn regions(&self, len: usize) -> Result<(usize, usize), CryptoError> {
        let ps = ESP_HEADER_LEN + self.id.iv_len();
        let icv = len
            .checked_sub(ICV_LEN)
            .filter(|&icv| icv >= ps + TRAILER_LEN)
            .ok_or(CryptoError::TooShort)?;
        let misaligned = !(icv - ps).is_multiple_of(16);
        if self.id.is_cbc() && misaligned {
            return Err(CryptoError::Misaligned);
        }
        Ok((ps, icv))
    }

    /// The 12-octet nonce `salt || IV` (RFC 4106 section 4, RFC 4543
    /// section 3.2, RFC 7634 section 2). Needs `esp.len() >= 16`, which
    /// [`Transform::regions`] guarantees.
    fn nonce(&self, esp: &[u8]) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[..SALT_LEN].copy_from_slice(&self.salt);
        nonce[SALT_LEN..].copy_from_slice(&esp[ESP_HEADER_LEN..ESP_HEADER_LEN + 8]);
        nonce
    }
}

/// The low 32 bits of `seq` must be the packet's Sequence Number field.
fn check_seq(esp: &[u8], seq: u64) -> Result<(), CryptoError> {
    let mut field = [0u8; 4];
    field.copy_from_slice(&esp[4..8]);
    if u32::from_be_bytes(field) == seq as u32 {
        Ok(())
    } else {
        Err(CryptoError::SeqMismatch)
    }
}

fn seq_high(seq: u64) -> [u8; 4] {
    ((seq >> 32) as u32).to_be_bytes()
}

/// Constant-time ICV comparison (RFC 4303 section 3.4.4).
fn verify(expected: &[u8; 16], got: &[u8; 16]) -> Result<(), CryptoError> {
    if bool::from(expected.ct_eq(got)) {
        Ok(())
    } else {
        Err(CryptoError::IntegrityCheckFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::cbc_hmac::CBC_IV_LABEL;
    use super::*;
    use aes::cipher::{BlockEncrypt, KeyInit};
    use aes::{Aes128Enc, Aes256Enc};
    use hmac::Mac;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).expect("valid hex in fixture")
    }

    /// `[SPI][Seq low][IV][payload][ICV]` as one buffer.
    fn packet(spi: &[u8], seq: u64, iv: &[u8], payload: &[u8], icv: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(spi);
        p.extend_from_slice(&(seq as u32).to_be_bytes());
        p.extend_from_slice(iv);
        p.extend_from_slice(payload);
        p.extend_from_slice(icv);
        p
    }

    fn key(id: TransformId, seed: u8) -> (Vec<u8>, Vec<u8>) {
        let enc = (0..id.enc_key_len())
            .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
            .collect();
        let auth = (0..id.auth_key_len())
            .map(|i| seed.wrapping_mul(17).wrapping_add(0x80 ^ i as u8))
            .collect();
        (enc, auth)
    }

    fn transform(id: TransformId, backend: GcmBackend, seed: u8) -> Transform {
        let (enc, auth) = key(id, seed);
        Transform::new(id, backend, &enc, &auth).expect("valid key lengths")
    }

    /// A cleartext ESP packet with `payload_len` octets of payload region.
    fn clear_packet(id: TransformId, seq: u64, payload_len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + 3) as u8).collect();
        packet(
            &[0xde, 0xad, 0xbe, 0xef],
            seq,
            &vec![0; id.iv_len()],
            &payload,
            &[0; ICV_LEN],
        )
    }

    /// Seals `esp` with the IV it already carries, as a published vector
    /// fixes it.
    fn seal_fixed_iv(t: &Transform, esp: &mut [u8], seq: u64, esn: bool) {
        let (ps, icv) = t.regions(esp.len()).expect("valid layout");
        t.seal_with_iv(esp, ps, icv, seq, esn).expect("seal");
    }

    fn sizes(id: TransformId) -> Vec<usize> {
        if id.is_cbc() {
            vec![16, 32, 64, 160, 1392]
        } else {
            vec![2, 3, 4, 16, 61, 64, 1400]
        }
    }

    #[test]
    fn names_round_trip() {
        for id in TransformId::ALL {
            assert_eq!(TransformId::from_name(id.name()), Some(id));
            assert_eq!(id.to_string(), id.name());
        }
        for b in GcmBackend::ALL {
            assert_eq!(GcmBackend::from_name(b.name()), Some(b));
        }
        assert_eq!(TransformId::from_name("aes-gcm"), None);
        assert_eq!(GcmBackend::default(), GcmBackend::Ring);
    }

    #[test]
    fn parameters() {
        use TransformId::*;
        let table = [
            // id, enc, auth, iv, align, aead, encrypts
            (AesGcm128, 20, 0, 8, 4, true, true),
            (AesGcm256, 36, 0, 8, 4, true, true),
            (AesCbc128HmacSha256, 16, 32, 16, 16, false, true),
            (AesCbc256HmacSha256, 32, 32, 16, 16, false, true),
            (NullHmacSha256, 0, 32, 0, 4, false, false),
            (ChaCha20Poly1305, 36, 0, 8, 4, true, true),
            (AesGmac128, 20, 0, 8, 4, true, false),
            (AesGmac256, 36, 0, 8, 4, true, false),
        ];
        for (id, enc, auth, iv, align, aead, encrypts) in table {
            assert_eq!(id.enc_key_len(), enc, "{id}");
            assert_eq!(id.auth_key_len(), auth, "{id}");
            assert_eq!(id.iv_len(), iv, "{id}");
            assert_eq!(id.icv_len(), 16, "{id}");
            assert_eq!(id.block_align(), align, "{id}");
            assert_eq!(id.is_aead(), aead, "{id}");
            assert_eq!(id.encrypts(), encrypts, "{id}");
            for n in 0..40 {
                assert_eq!((n + id.pad_len(n) + 2) % align, 0);
                assert!(id.pad_len(n) < align);
            }
        }
    }

    #[test]
    fn key_lengths_are_checked() {
        for id in TransformId::ALL {
            let (enc, auth) = key(id, 1);
            let mut long = enc.clone();
            long.push(0);
            assert_eq!(
                Transform::new(id, GcmBackend::Ring, &long, &auth).err(),
                Some(CryptoError::KeyLength {
                    expected: enc.len(),
                    got: enc.len() + 1
                })
            );
            let mut bad_auth = auth.clone();
            bad_auth.push(0);
            assert_eq!(
                Transform::new(id, GcmBackend::RustCrypto, &enc, &bad_auth).err(),
                Some(CryptoError::AuthKeyLength {
                    expected: auth.len(),
                    got: auth.len() + 1
                })
            );
        }
    }

    // GCM specification (McGrew & Viega), test cases 3, 4, 15 and 16, on the
    // AEAD primitive of both backends.
    const GCM_P: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
    const GCM_A: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
    const GCM_C128: &str = "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
                            21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985";
    const GCM_C256: &str = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                            8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad";

    #[test]
    fn gcm_spec_vectors() {
        let k128 = h("feffe9928665731c6d6a8f9467308308");
        let k256 = h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&h("cafebabefacedbaddecaf888"));
        let cases: [(&[u8], &str, usize, &str, &str); 4] = [
            (&k128, "", 64, GCM_C128, "4d5c2af327cd64a62cf35abd2ba6fab4"),
            (
                &k128,
                GCM_A,
                60,
                GCM_C128,
                "5bc94fbc3221a5db94fae95ae7121a47",
            ),
            (&k256, "", 64, GCM_C256, "b094dac5d93471bdec1a502270e3cc6c"),
            (
                &k256,
                GCM_A,
                60,
                GCM_C256,
                "76fc6ece0f4e1768cddf8853bb2d551b",
            ),
        ];
        for backend in GcmBackend::ALL {
            for (k, aad, n, c, t) in cases {
                let key = AeadKey::aes_gcm(backend, k).expect("key");
                let aad = h(aad);
                let mut buf = h(GCM_P)[..n].to_vec();
                let tag = key.seal(&nonce, &aad, &mut buf).expect("seal");
                assert_eq!(buf, h(c)[..n], "{backend} ciphertext");
                assert_eq!(tag.to_vec(), h(t), "{backend} tag");
                key.open(&nonce, &aad, &mut buf, &tag).expect("open");
                assert_eq!(buf, h(GCM_P)[..n]);
                let mut bad = tag;
                bad[15] ^= 1;
                assert_eq!(
                    key.open(&nonce, &aad, &mut buf, &bad),
                    Err(CryptoError::IntegrityCheckFailed)
                );
            }
        }
    }

    /// A whole-packet known answer: `seal` with the vector's IV gives the
    /// vector's packet, and `open` of it gives the plaintext back.
    #[allow(clippy::too_many_arguments)]
    fn esp_vector(
        id: TransformId,
        enc_key: &str,
        spi: &str,
        seq: u64,
        esn: bool,
        iv: &str,
        plain: &[u8],
        cipher: &[u8],
        icv: &str,
    ) {
        let backends: &[GcmBackend] = if id == TransformId::ChaCha20Poly1305 {
            &[GcmBackend::Ring]
        } else {
            &GcmBackend::ALL
        };
        for &backend in backends {
            let t = Transform::new(id, backend, &h(enc_key), &[]).expect("key");
            let expected = packet(&h(spi), seq, &h(iv), cipher, &h(icv));
            let mut p = packet(&h(spi), seq, &h(iv), plain, &[0; 16]);
            seal_fixed_iv(&t, &mut p, seq, esn);
            assert_eq!(hex::encode(&p), hex::encode(&expected), "{id} {backend}");
            t.open(&mut p, seq, esn).expect("open");
            assert_eq!(&p[8 + id.iv_len()..p.len() - 16], plain);
        }
    }

    // draft-mcgrew-gcm-test-01, the ESP test cases for RFC 4106 and 4543.
    #[test]
    fn rfc4106_esp_vectors() {
        // 128-bit key, extended sequence number 0x87654321_00000000.
        let p = h(
            "45000048699a000080114db7c0a80102c0a801010a9bf15638d30100000100000000\
                   0000045f736970045f756470037369700963796265726369747902646b00002100\
                   0101020201",
        );
        let c = h(
            "fecf537e729d5b07dc30df528dd22b768d1b98736696a6fd348509fa13ceac34\
                   cfa2436f14a3f3cf65925bf1f4a13c5d15b21e1884f5ff6247aeabb786b93bce\
                   61bc17d768fd9732",
        );
        esp_vector(
            TransformId::AesGcm128,
            "4c80cdefbb5d10da906ac73c3613a6342e443b68",
            "00004321",
            0x8765_4321_0000_0000,
            true,
            "4956ed7e3b244cfe",
            &p,
            &c,
            "459018148f6cbe722fd04796562dfdb4",
        );
        // 256-bit key.
        let p = h(
            "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee000000000\
                   7002400020bf0000020405b40101040201020201",
        );
        let c = h(
            "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763\
                   748a637985771d347f0545659f14e99def842d8e",
        );
        esp_vector(
            TransformId::AesGcm256,
            "abbccddef00112233445566778899aababbccddef00112233445566778899aab11223344",
            "4a2cbfe3",
            2,
            false,
            "0102030405060708",
            &p,
            &c,
            "b335f4eecfdbf831824b4c4915956c96",
        );
        // Dummy-sized payload, sequence number 0xffffffff.
        esp_vector(
            TransformId::AesGcm128,
            "7d773d00c144c525ac619d18c84a3f47d9664267",
            "335467ae",
            0xffff_ffff,
            false,
            "43457e9182443bc6",
            &h("01020201"),
            &h("437f866b"),
            "cb3f699fe9b0822bac961c4504bef270",
        );
    }

    #[test]
    fn rfc4543_esp_vector() {
        // draft-mcgrew-gcm-test-01, the GMAC test case: payload in clear.
        let p = h(
            "45000030da3a00008001df3bc0a80005c0a800010800c6cd0200070061626364\
                   65666768696a6b6c6d6e6f707172737401020201",
        );
        esp_vector(
            TransformId::AesGmac128,
            "4c80cdefbb5d10da906ac73c3613a63422433c64",
            "00004321",
            7,
            false,
            "0000000000000000",
            &p,
            &p,
            "f2a9a836e155106aa8dcd618e4099aaa",
        );
    }

    #[test]
    fn chacha20_poly1305_vector() {
        // RFC 8439 section 2.8.2 (RFC 7539 section 2.8.2) read as an ESP
        // packet: nonce 07000000 || 4041424344454647 is salt || IV, and the
        // 12-octet AAD 50515253 c0c1c2c3 c4c5c6c7 is SPI || SeqHigh || SeqLow
        // (RFC 7634 section 2.1 with ESN).
        let key: String = (0x80..=0x9fu8).map(|b| format!("{b:02x}")).collect();
        let p = b"Ladies and Gentlemen of the class of '99: If I could offer you \
                  only one tip for the future, sunscreen would be it.";
        let c = h(
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6\
                   3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36\
                   92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc\
                   3ff4def08e4b7a9de576d26586cec64b6116",
        );
        esp_vector(
            TransformId::ChaCha20Poly1305,
            &format!("{key}07000000"),
            "50515253",
            0xc0c1_c2c3_c4c5_c6c7,
            true,
            "4041424344454647",
            p,
            &c,
            "1ae10b594f09e26a7e902ecbd0600691",
        );
    }

    /// The CBC IV is `AES_Kiv(0^64 || seq)` with `Kiv` from HKDF-SHA-256
    /// (RFC 5869: extract with a zero salt, expand with the label), checked
    /// against HKDF written out here with HMAC alone.
    #[test]
    fn cbc_iv_is_the_counter_under_an_hkdf_key() {
        let hmac = |key: &[u8], parts: &[&[u8]]| {
            let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("hmac key");
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes()
        };
        for id in [
            TransformId::AesCbc128HmacSha256,
            TransformId::AesCbc256HmacSha256,
        ] {
            let (enc, auth) = key(id, 3);
            let prk = hmac(&[0u8; 32], &[&enc]);
            let okm = hmac(&prk, &[CBC_IV_LABEL, &[1]]);
            let t = Transform::new(id, GcmBackend::RustCrypto, &enc, &auth).expect("keys");
            for seq in [1u64, 2, 1 << 20] {
                let mut block = [0u8; 16];
                block[8..].copy_from_slice(&seq.to_be_bytes());
                let b = (&mut block).into();
                match enc.len() {
                    16 => Aes128Enc::new_from_slice(&okm[..16])
                        .expect("k")
                        .encrypt_block(b),
                    _ => Aes256Enc::new_from_slice(&okm[..32])
                        .expect("k")
                        .encrypt_block(b),
                }
                let mut esp = clear_packet(id, seq, 16);
                t.seal(&mut esp, seq, false).expect("seal");
                assert_eq!(&esp[8..24], &block, "{id} seq {seq}");
            }
        }
    }

    #[test]
    fn rfc3602_cbc_vectors() {
        let cases = [
            (
                "06a9214036b8a15b512e03d534120006",
                "3dafba429d9eb430b422da802c9fac41",
                b"Single block msg".to_vec(),
                "e353779c1079aeb82708942dbe77181a",
            ),
            (
                "c286696d887c9aa0611bbb3e2025a45a",
                "562e17996d093d28ddb3ba695a2e6f58",
                (0u8..32).collect(),
                "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1",
            ),
            (
                "6c3ea0477630ce21a2ce334aa746c2cd",
                "c782dc4c098c66cbd9cd27d825682c81",
                b"This is a 48-byte message (exactly 3 AES blocks)".to_vec(),
                "d0a02b3836451753d493665d33f0e8862dea54cdb293abc7506939276772f8d5\
                 021c19216bad525c8579695d83ba2684",
            ),
        ];
        for (k, iv, plain, c) in cases {
            let keys = CbcKeys::new(&h(k)).expect("key");
            let mut ivb = [0u8; 16];
            ivb.copy_from_slice(&h(iv));
            let mut buf = plain.clone();
            keys.encrypt(&ivb, &mut buf).expect("encrypt");
            assert_eq!(hex::encode(&buf), c);
            keys.decrypt(&ivb, &mut buf).expect("decrypt");
            assert_eq!(buf, plain);
            let mut odd = vec![0u8; 17];
            assert_eq!(keys.encrypt(&ivb, &mut odd), Err(CryptoError::Misaligned));
        }
    }

    #[test]
    fn hmac_sha256_128_vectors() {
        // RFC 4231 section 4.3 (test case 2), truncated to 128 bits
        // (RFC 4868 section 2.1).
        let mac = hmac_key(b"Jefe").expect("key");
        let icv = hmac_icv(&mac, b"what do ya want for nothing?", 0, false);
        assert_eq!(hex::encode(icv), "5bdcc146bf60754e6a042426089575c7");

        // RFC 4868 section 2.7.2.1, test case AUTH256-2 (32-octet key), as a
        // NULL ESP packet: "what" is the SPI, " do " the Seq.
        let t = Transform::new(
            TransformId::NullHmacSha256,
            GcmBackend::default(),
            &[],
            &b"Jefe".repeat(8),
        )
        .expect("key");
        let mut p = b"what do ya want for nothing?".to_vec();
        p.extend_from_slice(&[0; 16]);
        let seq = u64::from(u32::from_be_bytes(*b" do "));
        t.seal(&mut p, seq, false).expect("seal");
        assert_eq!(hex::encode(&p[28..]), "167f928588c5cc2eef8e3093caa0e87c");
        t.open(&mut p, seq, false).expect("open");
    }

    #[test]
    fn round_trip_every_transform() {
        for id in TransformId::ALL {
            for backend in GcmBackend::ALL {
                let t = transform(id, backend, 7);
                for esn in [false, true] {
                    for n in sizes(id) {
                        let seq = 0x0000_0003_8000_0001u64 + n as u64;
                        let clear = clear_packet(id, seq, n);
                        let mut p = clear.clone();
                        t.seal(&mut p, seq, esn).expect("seal");
                        let ps = 8 + id.iv_len();
                        assert_eq!(p[..8], clear[..8], "header untouched");
                        assert_eq!(
                            p[ps..ps + n] != clear[ps..ps + n],
                            id.encrypts(),
                            "{id}: payload encrypted iff the transform encrypts"
                        );
                        t.open(&mut p, seq, esn).expect("open");
                        assert_eq!(p[ps..ps + n], clear[ps..ps + n], "{id} {backend} {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn any_flipped_bit_fails() {
        for id in TransformId::ALL {
            let t = transform(id, GcmBackend::default(), 9);
            for esn in [false, true] {
                let seq = 0x0000_0005_0000_0100u64;
                let mut sealed = clear_packet(id, seq, 46 + id.pad_len(46) + 2);
                t.seal(&mut sealed, seq, esn).expect("seal");
                for i in 0..sealed.len() {
                    let mut p = sealed.clone();
                    p[i] ^= 1 << (i % 8);
                    // The receiver takes the low half from the wire.
                    let wire = u64::from(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
                    let rx_seq = (seq & !0xffff_ffff) | wire;
                    assert_eq!(
                        t.open(&mut p, rx_seq, esn),
                        Err(CryptoError::IntegrityCheckFailed),
                        "{id} esn={esn} byte {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn esn_high_half_is_authenticated() {
        for id in TransformId::ALL {
            let t = transform(id, GcmBackend::Ring, 3);
            let seq = 0x0000_0001_ffff_fff0u64;
            let mut p = clear_packet(id, seq, 32);
            t.seal(&mut p, seq, true).expect("seal");
            for wrong in [seq + (1 << 32), seq - (1 << 32), seq & 0xffff_ffff] {
                let mut q = p.clone();
                assert_eq!(
                    t.open(&mut q, wrong, true),
                    Err(CryptoError::IntegrityCheckFailed),
                    "{id}"
                );
            }
            // Nor does an ESN packet open as a non-ESN one.
            let mut q = p.clone();
            assert_eq!(
                t.open(&mut q, seq, false),
                Err(CryptoError::IntegrityCheckFailed),
                "{id}"
            );
            t.open(&mut p, seq, true).expect("open");
        }
    }

    #[test]
    fn failed_open_leaves_no_plaintext() {
        for id in TransformId::ALL.into_iter().filter(|t| t.encrypts()) {
            let t = transform(id, GcmBackend::RustCrypto, 5);
            let mut p = clear_packet(id, 1, 64);
            t.seal(&mut p, 1, false).expect("seal");
            let last = p.len() - 1;
            p[last] ^= 0x80;
            assert_eq!(
                t.open(&mut p, 1, false),
                Err(CryptoError::IntegrityCheckFailed)
            );
            let clear = clear_packet(id, 1, 64);
            let ps = 8 + id.iv_len();
            assert_ne!(p[ps..ps + 64], clear[ps..ps + 64], "{id}");
        }
    }

    #[test]
    fn short_and_misaligned_inputs_are_errors() {
        for id in TransformId::ALL {
            let t = transform(id, GcmBackend::default(), 2);
            let min = 8 + id.iv_len() + 2 + 16;
            for len in 0..min {
                let mut p = vec![0u8; len];
                assert_eq!(t.seal(&mut p, 0, true), Err(CryptoError::TooShort), "{id}");
                assert_eq!(t.open(&mut p, 0, true), Err(CryptoError::TooShort), "{id}");
            }
            if id.is_cbc() {
                for n in [17, 31, 33] {
                    let mut p = clear_packet(id, 0, n);
                    assert_eq!(t.seal(&mut p, 0, false), Err(CryptoError::Misaligned));
                    assert_eq!(t.open(&mut p, 0, false), Err(CryptoError::Misaligned));
                }
            }
            let mut p = clear_packet(id, 5, 16);
            assert_eq!(t.seal(&mut p, 6, false), Err(CryptoError::SeqMismatch));
            assert_eq!(t.open(&mut p, 6, false), Err(CryptoError::SeqMismatch));
        }
    }

    /// With ESN, GMAC and HMAC cover the high half as RFC 4543 section 3.3
    /// and RFC 4303 section 3.3.2.2.1 lay out; checked against the inputs
    /// built the obvious (allocating) way.
    #[test]
    fn esn_layouts_match_reference() {
        let seq = 0x1234_5678_9abc_def0u64;
        let payload: Vec<u8> = (0u8..48).collect();
        for id in [TransformId::AesGmac128, TransformId::AesGmac256] {
            let (enc, _) = key(id, 4);
            let t = Transform::new(id, GcmBackend::RustCrypto, &enc, &[]).expect("key");
            let mut p = packet(&[9, 8, 7, 6], seq, &[0; 8], &payload, &[0; 16]);
            t.seal(&mut p, seq, true).expect("seal");
            let mut aad = vec![9, 8, 7, 6];
            aad.extend_from_slice(&seq.to_be_bytes());
            aad.extend_from_slice(&seq.to_be_bytes()); // the IV
            aad.extend_from_slice(&payload);
            let (k, salt) = enc.split_at(enc.len() - 4);
            let mut nonce = salt.to_vec();
            nonce.extend_from_slice(&seq.to_be_bytes());
            let mut nonce_arr = [0u8; 12];
            nonce_arr.copy_from_slice(&nonce);
            let reference = AeadKey::aes_gcm(GcmBackend::Ring, k)
                .expect("key")
                .seal(&nonce_arr, &aad, &mut [])
                .expect("seal");
            assert_eq!(p[p.len() - 16..], reference, "{id}");
            assert_eq!(p[16..p.len() - 16], payload[..], "{id} payload restored");
        }
        for id in [
            TransformId::AesCbc256HmacSha256,
            TransformId::NullHmacSha256,
        ] {
            let (enc, auth) = key(id, 4);
            let t = Transform::new(id, GcmBackend::default(), &enc, &auth).expect("key");
            let mut p = packet(
                &[9, 8, 7, 6],
                seq,
                &vec![0; id.iv_len()],
                &payload,
                &[0; 16],
            );
            t.seal(&mut p, seq, true).expect("seal");
            let mut covered = p[..p.len() - 16].to_vec();
            covered.extend_from_slice(&seq.to_be_bytes()[..4]);
            let mut mac = <HmacSha256 as Mac>::new_from_slice(&auth).expect("key");
            mac.update(&covered);
            let full = mac.finalize().into_bytes();
            assert_eq!(p[p.len() - 16..], full[..16], "{id}");
        }
    }

    #[test]
    fn ivs() {
        // Counter IVs for the AEADs (RFC 4106 section 3.1).
        let t = transform(TransformId::AesGcm128, GcmBackend::default(), 1);
        let mut p = clear_packet(TransformId::AesGcm128, 0x1_0000_0002, 16);
        t.seal(&mut p, 0x1_0000_0002, true).expect("seal");
        assert_eq!(p[8..16], 0x1_0000_0002u64.to_be_bytes());

        // CBC IVs: distinct, not the sequence number, and key dependent.
        let id = TransformId::AesCbc128HmacSha256;
        let a = transform(id, GcmBackend::default(), 1);
        let b = transform(id, GcmBackend::default(), 2);
        let mut seen = std::collections::HashSet::new();
        for seq in 0..64u64 {
            let mut p = clear_packet(id, seq, 16);
            a.seal(&mut p, seq, false).expect("seal");
            let iv = p[8..24].to_vec();
            assert_ne!(iv[8..], seq.to_be_bytes());
            let mut q = clear_packet(id, seq, 16);
            b.seal(&mut q, seq, false).expect("seal");
            assert_ne!(iv, q[8..24]);
            assert!(seen.insert(iv));
        }
    }

    #[test]
    fn debug_masks_keys() {
        for id in TransformId::ALL {
            let enc: Vec<u8> = (0..id.enc_key_len()).map(|i| 0xa0 ^ i as u8).collect();
            let auth: Vec<u8> = (0..id.auth_key_len()).map(|i| 0x5c ^ i as u8).collect();
            let t = Transform::new(id, GcmBackend::Ring, &enc, &auth).expect("key");
            let s = format!("{t:?}");
            assert!(s.contains(id.name()) && s.contains("key: <masked>"), "{s}");
            for k in [&enc, &auth] {
                for w in k.windows(4) {
                    assert!(!s.to_lowercase().contains(&hex::encode(w)), "{s}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// ring and RustCrypto produce byte-identical GCM and GMAC packets,
        /// and each opens the other's.
        #[test]
        fn gcm_backends_agree(
            which in 0usize..4,
            key in proptest::collection::vec(any::<u8>(), 36),
            payload in proptest::collection::vec(any::<u8>(), 2..600),
            seq in any::<u64>(),
            esn in any::<bool>(),
        ) {
            let id = [
                TransformId::AesGcm128,
                TransformId::AesGcm256,
                TransformId::AesGmac128,
                TransformId::AesGmac256,
            ][which];
            let key = &key[..id.enc_key_len()];
            let ring = Transform::new(id, GcmBackend::Ring, key, &[]).expect("key");
            let rc = Transform::new(id, GcmBackend::RustCrypto, key, &[]).expect("key");
            let clear = packet(&[1, 2, 3, 4], seq, &[0; 8], &payload, &[0; 16]);
            let mut a = clear.clone();
            let mut b = clear.clone();
            ring.seal(&mut a, seq, esn).expect("seal");
            rc.seal(&mut b, seq, esn).expect("seal");
            prop_assert_eq!(&a, &b);
            ring.open(&mut b, seq, esn).expect("ring opens rustcrypto's");
            rc.open(&mut a, seq, esn).expect("rustcrypto opens ring's");
            prop_assert_eq!(&a[16..a.len() - 16], &payload[..]);
            prop_assert_eq!(&b[16..b.len() - 16], &payload[..]);
        }

        /// Arbitrary input never panics and never opens.
        #[test]
        fn arbitrary_input_is_an_error(
            which in 0usize..8,
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            seq in any::<u64>(),
            esn in any::<bool>(),
        ) {
            let id = TransformId::ALL[which];
            let t = transform(id, GcmBackend::Ring, 11);
            let mut p = bytes.clone();
            prop_assert!(t.open(&mut p, seq, esn).is_err());
            let mut p = bytes;
            let _ = t.seal(&mut p, seq, esn);
        }
    }
}
