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

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncrypt, BlockEncryptMut, InnerIvInit, KeyInit};
use aes::{Aes128, Aes128Enc, Aes256, Aes256Enc};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use hmac::{Hmac, Mac};
use ring::aead::{self as ring_aead, Aad, LessSafeKey, Nonce, UnboundKey};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// Length of the ESP header: SPI and sequence number (RFC 4303 section 2).
pub const ESP_HEADER_LEN: usize = 8;

/// ICV length of every supported transform, in octets.
pub const ICV_LEN: usize = 16;

/// Length of the ESP trailer's fixed part: pad length and next header
/// (RFC 4303 section 2.4, 2.5, 2.6).
pub const TRAILER_LEN: usize = 2;

/// Length of the salt that ends the `enc_key` of the GCM, GMAC and
/// ChaCha20-Poly1305 transforms (RFC 4106 section 8.1, RFC 4543 section 8.1,
/// RFC 7634 section 2).
const SALT_LEN: usize = 4;

/// The label of the CBC IV-key derivation (see [`Transform`]).
const CBC_IV_LABEL: &[u8] = b"bitsgw cbc iv";

type HmacSha256 = Hmac<Sha256>;

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
    /// ring's `LessSafeKey`.
    Ring,
    /// RustCrypto `aes-gcm`; the default, as it measured faster for packets
    /// of 64 to 1400 octets on the target machines.
    #[default]
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

/// An AES-GCM or ChaCha20-Poly1305 key on one backend.
// One value per SA, and keeping the schedules inline spares a pointer chase
// per packet, so the variants' size difference is accepted.
#[allow(clippy::large_enum_variant)]
enum AeadKey {
    Ring(LessSafeKey),
    RustCrypto128(Aes128Gcm),
    RustCrypto256(Aes256Gcm),
}

impl AeadKey {
    /// An AES-GCM key (16 or 32 octets, checked by the caller).
    fn aes_gcm(backend: GcmBackend, key: &[u8]) -> Result<Self, CryptoError> {
        let bad = CryptoError::KeyLength {
            expected: 32,
            got: key.len(),
        };
        match (backend, key.len()) {
            (GcmBackend::Ring, 16) => Self::ring(&ring_aead::AES_128_GCM, key),
            (GcmBackend::Ring, 32) => Self::ring(&ring_aead::AES_256_GCM, key),
            (GcmBackend::RustCrypto, 16) => Aes128Gcm::new_from_slice(key)
                .map(AeadKey::RustCrypto128)
                .map_err(|_| bad),
            (GcmBackend::RustCrypto, 32) => Aes256Gcm::new_from_slice(key)
                .map(AeadKey::RustCrypto256)
                .map_err(|_| bad),
            _ => Err(bad),
        }
    }

    fn ring(alg: &'static ring_aead::Algorithm, key: &[u8]) -> Result<Self, CryptoError> {
        UnboundKey::new(alg, key)
            .map(|k| AeadKey::Ring(LessSafeKey::new(k)))
            .map_err(|_| CryptoError::KeyLength {
                expected: alg.key_len(),
                got: key.len(),
            })
    }

    /// Encrypts `buf` in place and returns the tag.
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16], CryptoError> {
        let mut out = [0u8; 16];
        match self {
            AeadKey::Ring(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(*nonce),
                        Aad::from(aad),
                        buf,
                    )
                    .map_err(|_| CryptoError::TooLong)?;
                out.copy_from_slice(tag.as_ref());
            }
            AeadKey::RustCrypto128(k) => {
                let tag = k
                    .encrypt_in_place_detached(nonce.into(), aad, buf)
                    .map_err(|_| CryptoError::TooLong)?;
                out.copy_from_slice(&tag);
            }
            AeadKey::RustCrypto256(k) => {
                let tag = k
                    .encrypt_in_place_detached(nonce.into(), aad, buf)
                    .map_err(|_| CryptoError::TooLong)?;
                out.copy_from_slice(&tag);
            }
        }
        Ok(out)
    }

    /// Verifies `tag` (constant time, inside both libraries) and decrypts
    /// `buf` in place. On error `buf` holds unspecified bytes.
    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), CryptoError> {
        let ok = match self {
            AeadKey::Ring(k) => k
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(*nonce),
                    Aad::from(aad),
                    ring_aead::Tag::from(*tag),
                    buf,
                    0..,
                )
                .is_ok(),
            AeadKey::RustCrypto128(k) => k
                .decrypt_in_place_detached(nonce.into(), aad, buf, tag.into())
                .is_ok(),
            AeadKey::RustCrypto256(k) => k
                .decrypt_in_place_detached(nonce.into(), aad, buf, tag.into())
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(CryptoError::IntegrityCheckFailed)
        }
    }
}

/// The AES-CBC keys of an SA: the data key and the IV key.
// One value per SA, and keeping the schedules inline spares a pointer chase
// per packet, so the variants' size difference is accepted.
#[allow(clippy::large_enum_variant)]
enum CbcKeys {
    Aes128 { data: Aes128, iv: Aes128Enc },
    Aes256 { data: Aes256, iv: Aes256Enc },
}

impl CbcKeys {
    fn new(enc_key: &[u8]) -> Result<Self, CryptoError> {
        let bad = |_| CryptoError::KeyLength {
            expected: 32,
            got: enc_key.len(),
        };
        let mut iv_key = derive_cbc_iv_key(enc_key)?;
        let keys = match enc_key.len() {
            16 => Aes128::new_from_slice(enc_key)
                .map_err(bad)
                .and_then(|data| {
                    Aes128Enc::new_from_slice(&iv_key[..16])
                        .map(|iv| CbcKeys::Aes128 { data, iv })
                        .map_err(bad)
                }),
            32 => Aes256::new_from_slice(enc_key)
                .map_err(bad)
                .and_then(|data| {
                    Aes256Enc::new_from_slice(&iv_key[..])
                        .map(|iv| CbcKeys::Aes256 { data, iv })
                        .map_err(bad)
                }),
            n => Err(CryptoError::KeyLength {
                expected: 32,
                got: n,
            }),
        };
        iv_key.zeroize();
        keys
    }

    /// The IV for sequence number `seq`: the block `0^64 || seq` (big
    /// endian) encrypted under the IV key.
    fn iv(&self, seq: u64) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[8..].copy_from_slice(&seq.to_be_bytes());
        match self {
            CbcKeys::Aes128 { iv, .. } => iv.encrypt_block((&mut block).into()),
            CbcKeys::Aes256 { iv, .. } => iv.encrypt_block((&mut block).into()),
        }
        block
    }

    /// CBC-encrypts `buf` (a multiple of 16 octets) in place. Cloning the
    /// expanded key is a copy of the round keys, not a new key schedule; the
    /// copy is zeroized when dropped.
    fn encrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Result<(), CryptoError> {
        let n = buf.len();
        let r = match self {
            CbcKeys::Aes128 { data, .. } => {
                cbc::Encryptor::<Aes128>::inner_iv_init(data.clone(), iv.into())
                    .encrypt_padded_mut::<NoPadding>(buf, n)
                    .map(|_| ())
            }
            CbcKeys::Aes256 { data, .. } => {
                cbc::Encryptor::<Aes256>::inner_iv_init(data.clone(), iv.into())
                    .encrypt_padded_mut::<NoPadding>(buf, n)
                    .map(|_| ())
            }
        };
        r.map_err(|_| CryptoError::Misaligned)
    }

    /// CBC-decrypts `buf` (a multiple of 16 octets) in place.
    fn decrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Result<(), CryptoError> {
        let r = match self {
            CbcKeys::Aes128 { data, .. } => {
                cbc::Decryptor::<Aes128>::inner_iv_init(data.clone(), iv.into())
                    .decrypt_padded_mut::<NoPadding>(buf)
                    .map(|_| ())
            }
            CbcKeys::Aes256 { data, .. } => {
                cbc::Decryptor::<Aes256>::inner_iv_init(data.clone(), iv.into())
                    .decrypt_padded_mut::<NoPadding>(buf)
                    .map(|_| ())
            }
        };
        r.map_err(|_| CryptoError::Misaligned)
    }
}

/// `HMAC-SHA-256(enc_key, "bitsgw cbc iv")`, of which the first AES-key-length
/// octets are the CBC IV key.
fn derive_cbc_iv_key(enc_key: &[u8]) -> Result<[u8; 32], CryptoError> {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(enc_key).map_err(|_| CryptoError::KeyLength {
            expected: 32,
            got: enc_key.len(),
        })?;
    mac.update(CBC_IV_LABEL);
    let mut full = mac.finalize().into_bytes();
    let mut out = [0u8; 32];
    out.copy_from_slice(&full);
    full.as_mut_slice().zeroize();
    Ok(out)
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
///   (RFC 4303 section 3.3.3).
/// - AES-CBC needs an IV the attacker cannot predict (RFC 3602 section 2.1;
///   a predictable IV allows chosen-plaintext attacks on CBC). Each IV is
///   `AES_Kiv(0^64 || seq)` where `Kiv = HMAC-SHA-256(enc_key, "bitsgw cbc
///   iv")` truncated to the AES key length, derived once in
///   [`Transform::new`]. `Kiv` is a PRF output under the secret encryption
///   key, so it is itself secret and independent of the data key; AES under
///   a secret key is a pseudorandom permutation, so its outputs on the
///   distinct inputs `seq` are indistinguishable from random blocks to anyone
///   without the key: they are unpredictable even though `seq` is public, and
///   never repeat within the SA. This is the "encrypt a nonce" method of
///   NIST SP 800-38A Appendix C, with a separate key so no IV equals an
///   intermediate value of the data encryption.
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
                Keys::Aead(AeadKey::ring(&ring_aead::CHACHA20_POLY1305, key)?)
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
        // `is_multiple_of` is newer than the workspace's rust-version (1.80).
        #[allow(clippy::manual_is_multiple_of)]
        let misaligned = (icv - ps) % 16 != 0;
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

fn hmac_key(auth_key: &[u8]) -> Result<HmacSha256, CryptoError> {
    <HmacSha256 as Mac>::new_from_slice(auth_key).map_err(|_| CryptoError::AuthKeyLength {
        expected: 32,
        got: auth_key.len(),
    })
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

/// The AAD of GCM and ChaCha20-Poly1305 (RFC 4106 section 5, RFC 7634
/// section 2.1): `SPI || Seq` (8 octets) or, with ESN,
/// `SPI || SeqHigh || SeqLow` (12 octets).
fn aead_aad(esp: &[u8], seq: u64, esn: bool) -> ([u8; 12], usize) {
    let mut aad = [0u8; 12];
    aad[..4].copy_from_slice(&esp[..4]);
    if esn {
        aad[4..8].copy_from_slice(&seq_high(seq));
        aad[8..12].copy_from_slice(&esp[4..8]);
        (aad, 12)
    } else {
        aad[4..8].copy_from_slice(&esp[4..8]);
        (aad, 8)
    }
}

/// The GMAC ICV of ENCR_NULL_AUTH_AES_GMAC (RFC 4543 section 3): GCM with an
/// empty plaintext over the AAD `SPI || Seq || IV || payload || padding ||
/// pad len || next hdr` (section 3.3, figure 4), with the 64-bit ESN in place
/// of the 32-bit Seq when ESN is in use (figure 5). Nonce `salt || IV`
/// (section 3.2).
///
/// Without ESN the AAD is exactly `esp[..icv]`. With ESN the high half must
/// sit between SPI and Seq; both backends take the AAD as one slice, so the
/// packet is shifted 4 octets into the ICV space, the high half written in
/// the gap, and the packet shifted back: a `memmove` rather than an
/// allocation. The first 4 octets of the ICV space are overwritten; the
/// caller restores or overwrites them.
fn gmac(
    key: &AeadKey,
    esp: &mut [u8],
    icv: usize,
    nonce: &[u8; 12],
    seq: u64,
    esn: bool,
) -> Result<[u8; 16], CryptoError> {
    if !esn {
        return key.seal(nonce, &esp[..icv], &mut []);
    }
    esp.copy_within(4..icv, 8);
    esp[4..8].copy_from_slice(&seq_high(seq));
    let tag = key.seal(nonce, &esp[..icv + 4], &mut []);
    esp.copy_within(8..icv + 4, 4);
    tag
}

/// HMAC-SHA-256-128 (RFC 4868 section 2.1) over `SPI || Seq || IV ||
/// payload region`, followed with ESN by the high 32 bits of the sequence
/// number, which are authenticated but not sent (RFC 4303 sections 2.2.1
/// and 3.3.2.2.1). The pre-keyed state is copied, not re-keyed.
fn hmac_icv(mac: &HmacSha256, covered: &[u8], seq: u64, esn: bool) -> [u8; 16] {
    let mut m = mac.clone();
    m.update(covered);
    if esn {
        m.update(&seq_high(seq));
    }
    let full = m.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// Constant-time ICV comparison (RFC 4303 section 3.4.4).
fn verify(expected: &[u8; 16], got: &[u8; 16]) -> Result<(), CryptoError> {
    if bool::from(expected.ct_eq(got)) {
        Ok(())
    } else {
        Err(CryptoError::IntegrityCheckFailed)
    }
}
