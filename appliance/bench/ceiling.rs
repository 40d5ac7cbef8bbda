//! The raw crypto ceiling: each transform's primitives called directly
//! on buffers of the bench's sizes, every implementation the ESP engine
//! has for it (ring and RustCrypto for AES-GCM and GMAC).

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use aes_gcm::aead::AeadInPlace;
use bitsgw_ipsec::crypto::{GcmBackend, TransformId};
use hmac::{Hmac, Mac};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use sha2::Sha256;
use std::hint::black_box;
use std::time::Instant;

use super::*;

/// The raw crypto of a transform, called directly (one per configuration,
/// so the size of the CBC key schedules does not matter).
#[allow(clippy::large_enum_variant)]
pub(super) enum Raw {
    Aead(LessSafeKey),
    RustGcm128(aes_gcm::Aes128Gcm),
    RustGcm256(aes_gcm::Aes256Gcm),
    Cbc128(aes::Aes128, Hmac<Sha256>),
    Cbc256(aes::Aes256, Hmac<Sha256>),
    Null(Hmac<Sha256>),
}

impl Raw {
    /// Every implementation the ESP engine has for `t`, by name.
    fn all(t: TransformId) -> Result<Vec<(&'static str, Raw)>, String> {
        let mut all = Vec::new();
        let rust_gcm = match t {
            TransformId::AesGcm128 | TransformId::AesGmac128 => Some(Raw::RustGcm128(
                aes_gcm::Aes128Gcm::new_from_slice(&KEY[..16]).map_err(|e| e.to_string())?,
            )),
            TransformId::AesGcm256 | TransformId::AesGmac256 => Some(Raw::RustGcm256(
                aes_gcm::Aes256Gcm::new_from_slice(&KEY[..32]).map_err(|e| e.to_string())?,
            )),
            _ => None,
        };
        let name = match t {
            TransformId::AesCbc128HmacSha256
            | TransformId::AesCbc256HmacSha256
            | TransformId::NullHmacSha256 => GcmBackend::RustCrypto.name(),
            _ => GcmBackend::Ring.name(),
        };
        all.push((name, Raw::new(t)?));
        if let Some(r) = rust_gcm {
            all.push((GcmBackend::RustCrypto.name(), r));
        }
        Ok(all)
    }

    fn new(t: TransformId) -> Result<Raw, String> {
        let mac = || <Hmac<Sha256> as Mac>::new_from_slice(&KEY[..32]).map_err(|e| e.to_string());
        let aead = |alg: &'static ring::aead::Algorithm, n: usize| {
            UnboundKey::new(alg, &KEY[..n])
                .map(|k| Raw::Aead(LessSafeKey::new(k)))
                .map_err(|_| "ring key".to_string())
        };
        match t {
            TransformId::AesGcm128 | TransformId::AesGmac128 => aead(&ring::aead::AES_128_GCM, 16),
            TransformId::AesGcm256 | TransformId::AesGmac256 => aead(&ring::aead::AES_256_GCM, 32),
            TransformId::ChaCha20Poly1305 => aead(&ring::aead::CHACHA20_POLY1305, 32),
            TransformId::AesCbc128HmacSha256 => Ok(Raw::Cbc128(
                aes::Aes128::new_from_slice(&KEY[..16]).map_err(|e| e.to_string())?,
                mac()?,
            )),
            TransformId::AesCbc256HmacSha256 => Ok(Raw::Cbc256(
                aes::Aes256::new_from_slice(&KEY[..32]).map_err(|e| e.to_string())?,
                mac()?,
            )),
            TransformId::NullHmacSha256 => Ok(Raw::Null(mac()?)),
        }
    }

    /// Buffer length for a payload of `len` octets (CBC: whole blocks).
    fn buf_len(&self, len: usize) -> usize {
        match self {
            Raw::Cbc128(..) | Raw::Cbc256(..) => len.div_ceil(16) * 16,
            _ => len,
        }
    }

    fn seal(&self, buf: &mut [u8], tag: &mut [u8; 16]) {
        const AAD: [u8; 8] = [0, 0, 0x10, 0x01, 0, 0, 0, 1];
        const NONCE: [u8; 12] = [0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0, 0, 0, 0, 1];
        let len = buf.len();
        match self {
            Raw::Aead(k) => {
                if let Ok(t) = k.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(NONCE),
                    Aad::from(&AAD),
                    buf,
                ) {
                    tag.copy_from_slice(t.as_ref());
                }
            }
            Raw::Cbc128(c, mac) => {
                let _ = cbc::Encryptor::<aes::Aes128>::inner_iv_init(c.clone(), &[7u8; 16].into())
                    .encrypt_padded_mut::<NoPadding>(buf, len);
                hmac_into(mac, buf, tag);
            }
            Raw::Cbc256(c, mac) => {
                let _ = cbc::Encryptor::<aes::Aes256>::inner_iv_init(c.clone(), &[7u8; 16].into())
                    .encrypt_padded_mut::<NoPadding>(buf, len);
                hmac_into(mac, buf, tag);
            }
            Raw::Null(mac) => hmac_into(mac, buf, tag),
            Raw::RustGcm128(k) => {
                if let Ok(t) = k.encrypt_in_place_detached(&NONCE.into(), &AAD, buf) {
                    tag.copy_from_slice(&t);
                }
            }
            Raw::RustGcm256(k) => {
                if let Ok(t) = k.encrypt_in_place_detached(&NONCE.into(), &AAD, buf) {
                    tag.copy_from_slice(&t);
                }
            }
        }
    }

    /// Verifies and decrypts what `seal` produced (the tag after the
    /// ciphertext in `buf`).
    fn open(&self, buf: &mut [u8]) -> bool {
        const AAD: [u8; 8] = [0, 0, 0x10, 0x01, 0, 0, 0, 1];
        const NONCE: [u8; 12] = [0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0, 0, 0, 0, 1];
        if let Raw::Aead(k) = self {
            // ring takes ciphertext || tag, as `buf` holds them.
            return k
                .open_in_place(Nonce::assume_unique_for_key(NONCE), Aad::from(&AAD), buf)
                .is_ok();
        }
        let (body, tag) = buf.split_at_mut(buf.len() - 16);
        let mut expect = [0u8; 16];
        match self {
            Raw::Cbc128(c, mac) => {
                hmac_into(mac, body, &mut expect);
                let _ = cbc::Decryptor::<aes::Aes128>::inner_iv_init(c.clone(), &[7u8; 16].into())
                    .decrypt_padded_mut::<NoPadding>(body);
            }
            Raw::Cbc256(c, mac) => {
                hmac_into(mac, body, &mut expect);
                let _ = cbc::Decryptor::<aes::Aes256>::inner_iv_init(c.clone(), &[7u8; 16].into())
                    .decrypt_padded_mut::<NoPadding>(body);
            }
            Raw::Null(mac) => hmac_into(mac, body, &mut expect),
            Raw::RustGcm128(k) => {
                return k
                    .decrypt_in_place_detached(&NONCE.into(), &AAD, body, (&*tag).into())
                    .is_ok()
            }
            Raw::RustGcm256(k) => {
                return k
                    .decrypt_in_place_detached(&NONCE.into(), &AAD, body, (&*tag).into())
                    .is_ok()
            }
            Raw::Aead(_) => {}
        }
        expect == *tag
    }
}

pub(super) fn hmac_into(mac: &Hmac<Sha256>, data: &[u8], tag: &mut [u8; 16]) {
    let mut m = mac.clone();
    m.update(data);
    tag.copy_from_slice(&m.finalize().into_bytes()[..16]);
}

/// Every raw implementation's mean ns per packet over the size pattern.
pub(super) fn ceilings(
    t: TransformId,
    dir: Dir,
    size: Size,
    opts: &Options,
    tick: &dyn Fn(),
) -> Result<Vec<(&'static str, f64)>, String> {
    Raw::all(t)?
        .into_iter()
        .map(|(name, raw)| Ok((name, ceiling(&raw, t, dir, size, opts, tick)?)))
        .collect()
}

/// Mean ns per packet of `raw` over the size pattern, `count` packets (or
/// `seconds`).
fn ceiling(
    raw: &Raw,
    t: TransformId,
    dir: Dir,
    size: Size,
    opts: &Options,
    tick: &dyn Fn(),
) -> Result<f64, String> {
    let pattern = size.pattern();
    // Sealed buffers (ciphertext || tag), one per pattern size.
    let mut bufs: Vec<Vec<u8>> = pattern
        .iter()
        .map(|&len| {
            let mut b = vec![0x5au8; raw.buf_len(len) + 16];
            let (body, tag) = b.split_at_mut(raw.buf_len(len));
            let mut t16 = [0u8; 16];
            raw.seal(body, &mut t16);
            tag.copy_from_slice(&t16);
            b
        })
        .collect();
    let originals = bufs.clone();
    let mut tag = [0u8; 16];
    let mut one = |i: usize| -> bool {
        let k = i % bufs.len();
        match dir {
            Dir::Encrypt => {
                let n = bufs[k].len() - 16;
                raw.seal(black_box(&mut bufs[k][..n]), &mut tag);
                true
            }
            Dir::Decrypt => {
                bufs[k].copy_from_slice(&originals[k]);
                raw.open(black_box(&mut bufs[k]))
            }
        }
    };
    // Warm up, then measure.
    for i in 0..1000 {
        if !one(i) {
            return Err(format!("{}: raw open failed", t.name()));
        }
    }
    let t0 = Instant::now();
    let mut done = 0u64;
    match opts.seconds {
        None => {
            while done < opts.packets {
                for _ in 0..256 {
                    black_box(one(done as usize));
                    done += 1;
                }
                tick();
            }
        }
        Some(s) => {
            while t0.elapsed().as_secs_f64() < s {
                for _ in 0..256 {
                    black_box(one(done as usize));
                    done += 1;
                }
                tick();
            }
        }
    }
    black_box(tag);
    Ok(t0.elapsed().as_secs_f64() * 1e9 / done as f64)
}
