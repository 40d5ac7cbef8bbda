//! AES-CBC (RFC 3602) with its IV key, and HMAC-SHA-256-128 (RFC 4868)
//! for the CBC and NULL transforms.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncrypt, BlockEncryptMut, InnerIvInit, KeyInit};
use aes::{Aes128, Aes128Enc, Aes256, Aes256Enc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;

pub(super) type HmacSha256 = Hmac<Sha256>;

/// The HKDF info of the CBC IV-key derivation (see [`Transform`]).
pub(super) const CBC_IV_LABEL: &[u8] = b"bitsgw esp aes-cbc iv key v2";

/// The AES-CBC keys of an SA: the data key and the IV key.
// One value per SA, and keeping the schedules inline spares a pointer chase
// per packet, so the variants' size difference is accepted.
#[allow(clippy::large_enum_variant)]
pub(super) enum CbcKeys {
    Aes128 { data: Aes128, iv: Aes128Enc },
    Aes256 { data: Aes256, iv: Aes256Enc },
}

impl CbcKeys {
    pub(super) fn new(enc_key: &[u8]) -> Result<Self, CryptoError> {
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
    pub(super) fn iv(&self, seq: u64) -> [u8; 16] {
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
    pub(super) fn encrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Result<(), CryptoError> {
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
    pub(super) fn decrypt(&self, iv: &[u8; 16], buf: &mut [u8]) -> Result<(), CryptoError> {
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

/// The CBC IV key: HKDF-SHA-256 (RFC 5869) with the encryption key as input
/// keying material, no salt and the info [`CBC_IV_LABEL`]; the first
/// AES-key-length octets of the 32 it yields key the IV cipher.
pub(super) fn derive_cbc_iv_key(enc_key: &[u8]) -> Result<[u8; 32], CryptoError> {
    struct Len32;
    impl ring::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(enc_key);
    let mut out = [0u8; 32];
    prk.expand(&[CBC_IV_LABEL], Len32)
        .and_then(|okm| okm.fill(&mut out))
        .map_err(|_| CryptoError::KeyLength {
            expected: 32,
            got: enc_key.len(),
        })?;
    Ok(out)
}

pub(super) fn hmac_key(auth_key: &[u8]) -> Result<HmacSha256, CryptoError> {
    <HmacSha256 as Mac>::new_from_slice(auth_key).map_err(|_| CryptoError::AuthKeyLength {
        expected: 32,
        got: auth_key.len(),
    })
}

/// HMAC-SHA-256-128 (RFC 4868 section 2.1) over `SPI || Seq || IV ||
/// payload region`, followed with ESN by the high 32 bits of the sequence
/// number, which are authenticated but not sent (RFC 4303 sections 2.2.1
/// and 3.3.2.2.1). The pre-keyed state is copied, not re-keyed.
pub(super) fn hmac_icv(mac: &HmacSha256, covered: &[u8], seq: u64, esn: bool) -> [u8; 16] {
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
