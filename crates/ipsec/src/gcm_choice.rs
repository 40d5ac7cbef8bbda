//! Which AES-GCM implementation an SA seals and opens with.
//!
//! Both backends ([`GcmBackend`]) compute the same ciphertext and tag; they
//! differ only in speed, and which is faster depends on the machine (the
//! CPU's AES, carry-less multiply and vector extensions) and on the
//! packet size. So an SA's configuration names a backend or says `auto`
//! (the default), and `auto` takes the stage's [`GcmPreference`]: the
//! faster backend per key size, measured on the machine by whoever runs
//! the stage (the appliance, at start; this crate keeps no clock). Without
//! a measurement the preference is ring for both key sizes.

use crate::crypto::{GcmBackend, TransformId};
use core::fmt;

/// An SA's configured backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendSetting {
    /// The stage's [`GcmPreference`] for the SA's key size.
    #[default]
    Auto,
    /// This one, whatever the machine.
    Fixed(GcmBackend),
}

impl BackendSetting {
    /// The name used in configuration files and output.
    pub fn name(self) -> &'static str {
        match self {
            BackendSetting::Auto => "auto",
            BackendSetting::Fixed(b) => b.name(),
        }
    }

    /// The inverse of [`BackendSetting::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        if s == "auto" {
            return Some(BackendSetting::Auto);
        }
        GcmBackend::from_name(s).map(BackendSetting::Fixed)
    }

    /// The backend an SA of `transform` uses under `preference`.
    pub fn resolve(self, transform: TransformId, preference: &GcmPreference) -> GcmBackend {
        match self {
            BackendSetting::Fixed(b) => b,
            BackendSetting::Auto => preference.for_transform(transform),
        }
    }
}

impl fmt::Display for BackendSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The backend `auto` SAs use, per AES key size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcmPreference {
    /// For AES-128-GCM and AES-128-GMAC.
    pub aes128: GcmBackend,
    /// For AES-256-GCM and AES-256-GMAC.
    pub aes256: GcmBackend,
}

impl Default for GcmPreference {
    /// Not measured: ring for both.
    fn default() -> Self {
        GcmPreference {
            aes128: GcmBackend::Ring,
            aes256: GcmBackend::Ring,
        }
    }
}

impl GcmPreference {
    /// The backend for `transform`. Transforms without AES-GCM inside
    /// (ChaCha20-Poly1305, CBC, NULL) ignore it; they get ring, which is
    /// what they report.
    pub fn for_transform(&self, transform: TransformId) -> GcmBackend {
        match transform {
            TransformId::AesGcm128 | TransformId::AesGmac128 => self.aes128,
            TransformId::AesGcm256 | TransformId::AesGmac256 => self.aes256,
            _ => GcmBackend::Ring,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_auto_is_the_default() {
        for s in [
            BackendSetting::Auto,
            BackendSetting::Fixed(GcmBackend::Ring),
            BackendSetting::Fixed(GcmBackend::RustCrypto),
        ] {
            assert_eq!(BackendSetting::from_name(s.name()), Some(s));
        }
        assert_eq!(BackendSetting::from_name("openssl"), None);
        assert_eq!(BackendSetting::default(), BackendSetting::Auto);
    }

    #[test]
    fn auto_follows_the_preference_per_key_size_and_fixed_ignores_it() {
        let pref = GcmPreference {
            aes128: GcmBackend::RustCrypto,
            aes256: GcmBackend::Ring,
        };
        let auto = BackendSetting::Auto;
        assert_eq!(
            auto.resolve(TransformId::AesGcm128, &pref),
            GcmBackend::RustCrypto
        );
        assert_eq!(
            auto.resolve(TransformId::AesGmac128, &pref),
            GcmBackend::RustCrypto
        );
        assert_eq!(
            auto.resolve(TransformId::AesGcm256, &pref),
            GcmBackend::Ring
        );
        assert_eq!(
            auto.resolve(TransformId::ChaCha20Poly1305, &pref),
            GcmBackend::Ring
        );
        let fixed = BackendSetting::Fixed(GcmBackend::Ring);
        assert_eq!(
            fixed.resolve(TransformId::AesGcm128, &pref),
            GcmBackend::Ring
        );
    }
}
