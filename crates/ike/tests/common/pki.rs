//! Test certificates made at test time with rcgen: a CA and end-entity
//! certificates signed by it, ECDSA P-256 or Ed25519; RSA end-entity keys
//! (which ring cannot make) come from the `openssl` command.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bitsgw_ike::certs::{Credentials, SigningKey};
use bitsgw_ike::crypto::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SignatureAlgorithm,
};

/// The key algorithms tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    P256,
    /// ECDSA P-384, which bitsgw verifies but does not sign with.
    P384,
    Ed25519,
    /// RSA 2048, for end-entity certificates only (bitsgw verifies RSA
    /// signatures but does not sign with RSA).
    Rsa,
}

impl Alg {
    fn rcgen(self) -> &'static SignatureAlgorithm {
        match self {
            Alg::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Alg::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Alg::Ed25519 => &rcgen::PKCS_ED25519,
            Alg::Rsa => &rcgen::PKCS_RSA_SHA256,
        }
    }

    fn generate(self) -> KeyPair {
        if self != Alg::Rsa {
            return KeyPair::generate_for(self.rcgen()).unwrap();
        }
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl (scripts/setup-test-deps.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = String::from_utf8(out.stdout).unwrap();
        KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap()
    }
}

/// A CA.
pub struct Ca {
    pub der: Vec<u8>,
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// An end-entity certificate and its key.
pub struct Leaf {
    pub der: Vec<u8>,
    pub pem: String,
    pub key_der: Vec<u8>,
    pub key_pem: String,
}

impl Ca {
    pub fn new(alg: Alg, name: &str) -> Ca {
        let key = alg.generate();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA under this one.
    pub fn intermediate(&self, alg: Alg, name: &str) -> Ca {
        let key = alg.generate();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Ca {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses, as
    /// subjectAltNames; the first is also the subject's CN).
    pub fn leaf(&self, alg: Alg, names: &[&str]) -> Leaf {
        self.leaf_with(alg, names, |_| {})
    }

    /// A certificate valid only in `year`.
    pub fn leaf_valid_in(&self, alg: Alg, names: &[&str], year: i32) -> Leaf {
        self.leaf_with(alg, names, |p| {
            p.not_before = rcgen::date_time_ymd(year, 1, 1);
            p.not_after = rcgen::date_time_ymd(year, 12, 31);
        })
    }

    fn leaf_with(&self, alg: Alg, names: &[&str], f: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let key = alg.generate();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        f(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Leaf {
    /// Credentials with this certificate and key, trusting `cas`.
    pub fn credentials(&self, cas: &[&Ca]) -> Credentials {
        let key = SigningKey::from_pkcs8(Secret::new(self.key_der.clone())).unwrap();
        Credentials::new(
            self.der.clone(),
            key,
            cas.iter().map(|c| c.der.clone()).collect(),
        )
        .unwrap()
    }
}

/// The DER Name of one commonName (as rcgen writes it: a UTF8String), for
/// ID_DER_ASN1_DN identities (RFC 7296 3.5).
pub fn common_name_dn(cn: &str) -> Vec<u8> {
    let value = [&[0x0c, cn.len() as u8][..], cn.as_bytes()].concat();
    let atv = [
        &[0x30, 5 + value.len() as u8, 0x06, 0x03, 0x55, 0x04, 0x03][..],
        &value,
    ]
    .concat();
    let set = [&[0x31, atv.len() as u8][..], &atv].concat();
    [&[0x30, set.len() as u8][..], &set].concat()
}
