//! The AEAD keys of GCM, GMAC and ChaCha20-Poly1305 on their backends,
//! the AAD of RFC 4106 and RFC 7634, and the GMAC ICV of RFC 4543.

use aes::cipher::KeyInit;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use ring::aead::{self as ring_aead, Aad, LessSafeKey, Nonce, UnboundKey};

use super::*;

/// An AES-GCM or ChaCha20-Poly1305 key on one backend.
// One value per SA, and keeping the schedules inline spares a pointer chase
// per packet, so the variants' size difference is accepted.
#[allow(clippy::large_enum_variant)]
pub(super) enum AeadKey {
    Ring(LessSafeKey),
    RustCrypto128(Aes128Gcm),
    RustCrypto256(Aes256Gcm),
}

impl AeadKey {
    /// An AES-GCM key (16 or 32 octets, checked by the caller).
    pub(super) fn aes_gcm(backend: GcmBackend, key: &[u8]) -> Result<Self, CryptoError> {
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

    pub(super) fn ring(
        alg: &'static ring_aead::Algorithm,
        key: &[u8],
    ) -> Result<Self, CryptoError> {
        UnboundKey::new(alg, key)
            .map(|k| AeadKey::Ring(LessSafeKey::new(k)))
            .map_err(|_| CryptoError::KeyLength {
                expected: alg.key_len(),
                got: key.len(),
            })
    }

    /// Encrypts `buf` in place and returns the tag.
    pub(super) fn seal(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; 16], CryptoError> {
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
    pub(super) fn open(
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

/// The AAD of GCM and ChaCha20-Poly1305 (RFC 4106 section 5, RFC 7634
/// section 2.1): `SPI || Seq` (8 octets) or, with ESN,
/// `SPI || SeqHigh || SeqLow` (12 octets).
pub(super) fn aead_aad(esp: &[u8], seq: u64, esn: bool) -> ([u8; 12], usize) {
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
pub(super) fn gmac(
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
