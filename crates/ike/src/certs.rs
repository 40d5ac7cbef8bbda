//! Authentication by digital signature (RFC 7427) with X.509 certificates:
//! our certificate and private key, the trusted CA certificates, signing
//! our AUTH payload and verifying the peer's.
//!
//! Certificates are parsed, path-validated and their signatures checked by
//! rustls' WebPKI (rustls-webpki) on ring: the maintained verifier under
//! rustls, which builds the path to a trust anchor, checks validity at the
//! time given, basic constraints, key usage and name constraints, and
//! matches DNS names and IP addresses against subjectAltName only. No
//! ASN.1 is parsed here: signature algorithm identifiers are compared as
//! opaque octet strings (RFC 7427 3).

use crate::crypto::{CryptoError, Secret};
use crate::wire::{IdPayload, IdType};
use core::time::Duration;
use ring::rand::SecureRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair};
use rustls_pki_types::{CertificateDer, ServerName, SignatureVerificationAlgorithm, UnixTime};
use webpki::{EndEntityCert, Error as PkiError, KeyPurposeIdIter};

/// Hash algorithm numbers of SIGNATURE_HASH_ALGORITHMS (RFC 7427 4, RFC
/// 8420 2 for Identity).
pub const HASH_SHA2_256: u16 = 2;
/// SHA2-384.
pub const HASH_SHA2_384: u16 = 3;
/// SHA2-512.
pub const HASH_SHA2_512: u16 = 4;
/// Identity: the message is signed whole (Ed25519, RFC 8420).
pub const HASH_IDENTITY: u16 = 5;

/// The hash algorithms we verify signatures with, as sent in our
/// SIGNATURE_HASH_ALGORITHMS notification.
pub const SUPPORTED_HASHES: [u16; 4] = [HASH_SHA2_256, HASH_SHA2_384, HASH_SHA2_512, HASH_IDENTITY];

/// ecdsa-with-SHA256 AlgorithmIdentifier (RFC 7427 appendix A).
pub const ALG_ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
/// ecdsa-with-SHA384 AlgorithmIdentifier (RFC 7427 appendix A).
pub const ALG_ECDSA_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
/// Ed25519 AlgorithmIdentifier (RFC 8420 2).
pub const ALG_ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
/// sha256WithRSAEncryption AlgorithmIdentifier (RFC 7427 appendix A).
pub const ALG_RSA_SHA256: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
/// sha384WithRSAEncryption AlgorithmIdentifier (RFC 7427 appendix A).
pub const ALG_RSA_SHA384: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00,
];
/// sha512WithRSAEncryption AlgorithmIdentifier (RFC 7427 appendix A).
pub const ALG_RSA_SHA512: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00,
];

/// AUTH method 9: ECDSA with SHA-256 on P-256 (RFC 4754), the signature
/// as r | s.
pub const AUTH_ECDSA_P256: u8 = 9;
/// AUTH method 14: Digital Signature (RFC 7427 3).
pub const AUTH_DIGITAL_SIGNATURE: u8 = 14;

/// Certificate encoding 4: X.509 Certificate - Signature (RFC 7296 3.6).
pub const CERT_X509_SIGNATURE: u8 = 4;

/// The signature algorithms of AUTH method 14 we verify, by their
/// AlgorithmIdentifier; an ECDSA identifier names the hash only, so each
/// curve's verifier is tried (the certificate's key picks one).
const VERIFIERS: [(&[u8], &[&dyn SignatureVerificationAlgorithm]); 6] = [
    (
        ALG_ECDSA_SHA256,
        &[
            webpki::ring::ECDSA_P256_SHA256,
            webpki::ring::ECDSA_P384_SHA256,
        ],
    ),
    (
        ALG_ECDSA_SHA384,
        &[
            webpki::ring::ECDSA_P256_SHA384,
            webpki::ring::ECDSA_P384_SHA384,
        ],
    ),
    (ALG_ED25519, &[webpki::ring::ED25519]),
    (ALG_RSA_SHA256, &[webpki::ring::RSA_PKCS1_2048_8192_SHA256]),
    (ALG_RSA_SHA384, &[webpki::ring::RSA_PKCS1_2048_8192_SHA384]),
    (ALG_RSA_SHA512, &[webpki::ring::RSA_PKCS1_2048_8192_SHA512]),
];

/// Algorithms certificates in a path may be signed with.
const CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Why a certificate or a signature was refused (each is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The pre-shared key's AUTH did not match.
    #[error("pre-shared key AUTH does not match")]
    PskMismatch,
    /// The AUTH method is not the one configured for the peer.
    #[error("AUTH method not accepted")]
    WrongMethod,
    /// The ID payload is not the configured peer identity.
    #[error("identity is not the configured one")]
    IdentityMismatch,
    /// No certificate (encoding 4) came with a signature AUTH.
    #[error("no certificate")]
    NoCertificate,
    /// A certificate did not parse.
    #[error("malformed certificate")]
    BadCertificate,
    /// The certificate does not chain to a configured CA.
    #[error("certificate does not chain to a trusted CA")]
    UntrustedChain,
    /// The certificate (or one in its path) is expired or not yet valid.
    #[error("certificate outside its validity period")]
    NotValidNow,
    /// No wall-clock time was given to check validity against.
    #[error("no wall-clock time to check validity against")]
    NoWallClock,
    /// The certificate does not name the ID payload's identity.
    #[error("identity not in the certificate")]
    IdentityNotInCertificate,
    /// The signature algorithm identifier is not one we verify.
    #[error("signature algorithm not supported")]
    UnsupportedAlgorithm,
    /// The signature does not verify with the certificate's key.
    #[error("signature does not verify")]
    BadSignature,
}

/// The kinds of private key we sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256, signing with SHA-256.
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

/// Errors in certificate credentials given in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The private key is neither an ECDSA P-256 nor an Ed25519 PKCS#8 key.
    #[error("not a PKCS#8 ECDSA P-256 or Ed25519 private key")]
    UnsupportedKey,
    /// Our certificate did not parse.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A CA certificate did not parse.
    #[error("CA certificate {index}: {reason}")]
    Ca {
        /// Its position in the list.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// No CA certificate is configured.
    #[error("no CA certificate")]
    NoCa,
    /// The private key is not the certificate's.
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    /// The PEM text holds no block of the kind needed.
    #[error("no PEM {0} block")]
    NoPem(&'static str),
    /// A PEM block did not decode.
    #[error("PEM: {0}")]
    Pem(String),
}

/// Every CERTIFICATE block of PEM text, as DER.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, CredentialError> {
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CredentialError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CredentialError::NoPem("CERTIFICATE"));
    }
    Ok(certs)
}

/// The PKCS#8 PRIVATE KEY block of PEM text, as a signing key; the
/// decoded copy is zeroized.
pub fn private_key_from_pem(pem: &[u8]) -> Result<SigningKey, CredentialError> {
    use rustls_pki_types::pem::{self, PemObject};
    use rustls_pki_types::PrivatePkcs8KeyDer;
    use zeroize::Zeroize;
    let key = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => CredentialError::NoPem("PRIVATE KEY"),
        // The message names no key octets.
        e => CredentialError::Pem(e.to_string()),
    })?;
    let secret = Secret::new(key.secret_pkcs8_der().to_vec());
    let mut decoded = rustls_pki_types::PrivateKeyDer::Pkcs8(key);
    decoded.zeroize();
    SigningKey::from_pkcs8(secret)
}

/// A private key (PKCS#8 DER, zeroized on drop); ring's key pair is made
/// from it for each signature, so no other copy lives on.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    kind: KeyKind,
    pkcs8: Secret,
}

impl core::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kind", &self.kind)
            .field("pkcs8", &"<masked>")
            .finish()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 private key: ECDSA P-256 or Ed25519 (v1 or v2).
    pub fn from_pkcs8(pkcs8: Secret) -> Result<SigningKey, CredentialError> {
        let rng = ring::rand::SystemRandom::new();
        let der = pkcs8.expose();
        let kind =
            if EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
                .is_ok()
            {
                KeyKind::EcdsaP256
            } else if Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).is_ok() {
                KeyKind::Ed25519
            } else {
                return Err(CredentialError::UnsupportedKey);
            };
        Ok(SigningKey { kind, pkcs8 })
    }

    /// Which kind of key.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Signs `message` for AUTH method 14: the AlgorithmIdentifier and the
    /// signature (ECDSA as a DER Ecdsa-Sig-Value, RFC 7427 3).
    pub fn sign(
        &self,
        message: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<(&'static [u8], Vec<u8>), CryptoError> {
        let der = self.pkcs8.expose();
        match self.kind {
            KeyKind::EcdsaP256 => {
                let key =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der, rng)
                        .map_err(|_| CryptoError::Signature)?;
                let sig = key.sign(rng, message).map_err(|_| CryptoError::Signature)?;
                Ok((ALG_ECDSA_SHA256, sig.as_ref().to_vec()))
            }
            KeyKind::Ed25519 => {
                let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|_| CryptoError::Signature)?;
                Ok((ALG_ED25519, key.sign(message).as_ref().to_vec()))
            }
        }
    }

    /// Signs `message` for AUTH method 9 (RFC 4754: ECDSA P-256 with
    /// SHA-256, r | s), for a peer that announced no RFC 7427 hashes; none
    /// for an Ed25519 key, which has no such method.
    pub fn sign_rfc4754(
        &self,
        message: &[u8],
        rng: &dyn SecureRandom,
    ) -> Option<Result<Vec<u8>, CryptoError>> {
        if self.kind != KeyKind::EcdsaP256 {
            return None;
        }
        let sign = || {
            let key = EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                self.pkcs8.expose(),
                rng,
            )
            .map_err(|_| CryptoError::Signature)?;
            let sig = key.sign(rng, message).map_err(|_| CryptoError::Signature)?;
            Ok(sig.as_ref().to_vec())
        };
        Some(sign())
    }

    fn verifier(&self) -> &'static dyn SignatureVerificationAlgorithm {
        match self.kind {
            KeyKind::EcdsaP256 => webpki::ring::ECDSA_P256_SHA256,
            KeyKind::Ed25519 => webpki::ring::ED25519,
        }
    }
}

/// Our certificate, its key and the CAs we trust for the peer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    certificate: CertificateDer<'static>,
    /// Intermediate CA certificates sent after ours, for the peer to
    /// build the path (RFC 7296 3.6).
    intermediates: Vec<CertificateDer<'static>>,
    key: SigningKey,
    cas: Vec<CertificateDer<'static>>,
}

impl Credentials {
    /// Checks that every certificate parses and that `key` is the
    /// certificate's (by signing a test message and verifying it with the
    /// certificate's public key).
    pub fn new(
        certificate: Vec<u8>,
        key: SigningKey,
        cas: Vec<Vec<u8>>,
    ) -> Result<Credentials, CredentialError> {
        let certificate = CertificateDer::from(certificate);
        let ee = EndEntityCert::try_from(&certificate)
            .map_err(|e| CredentialError::Certificate(e.to_string()))?;
        if cas.is_empty() {
            return Err(CredentialError::NoCa);
        }
        let cas: Vec<CertificateDer<'static>> = cas.into_iter().map(CertificateDer::from).collect();
        for (index, ca) in cas.iter().enumerate() {
            webpki::anchor_from_trusted_cert(ca).map_err(|e| CredentialError::Ca {
                index,
                reason: e.to_string(),
            })?;
        }
        let probe = b"bitsgw: does the key match the certificate";
        let rng = ring::rand::SystemRandom::new();
        let (_, sig) = key
            .sign(probe, &rng)
            .map_err(|_| CredentialError::UnsupportedKey)?;
        ee.verify_signature(key.verifier(), probe, &sig)
            .map_err(|_| CredentialError::KeyMismatch)?;
        Ok(Credentials {
            certificate,
            intermediates: Vec::new(),
            key,
            cas,
        })
    }

    /// These credentials sending `intermediates` (DER, each checked to
    /// parse) after our certificate.
    pub fn with_intermediates(
        mut self,
        intermediates: Vec<Vec<u8>>,
    ) -> Result<Credentials, CredentialError> {
        let intermediates: Vec<CertificateDer<'static>> = intermediates
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        for c in &intermediates {
            webpki::anchor_from_trusted_cert(c)
                .map_err(|e| CredentialError::Certificate(e.to_string()))?;
        }
        self.intermediates = intermediates;
        Ok(self)
    }

    /// The intermediate CA certificates we send (DER).
    pub fn intermediates(&self) -> impl Iterator<Item = &[u8]> {
        self.intermediates.iter().map(|c| c.as_ref())
    }

    /// Our end-entity certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// Our private key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// A CERTREQ's Certification Authority field (RFC 7296 3.7): the SHA-1
    /// hash of each trusted CA's SubjectPublicKeyInfo, concatenated.
    pub fn certreq_authorities(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 * self.cas.len());
        for ca in &self.cas {
            if let Ok(anchor) = webpki::anchor_from_trusted_cert(ca) {
                let spki = webpki::spki_for_anchor(&anchor);
                let hash =
                    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, spki.as_ref());
                out.extend_from_slice(hash.as_ref());
            }
        }
        out
    }

    /// Verifies the peer: its end-entity certificate (`chain[0]`, with
    /// intermediates after it) chains to one of our CAs at `now`, names
    /// the identity of `id`, and its key verifies `signature` over
    /// `signed` (the octets of RFC 7296 2.15) with AUTH `method`.
    pub fn verify_peer(
        &self,
        chain: &[&[u8]],
        id: &IdPayload,
        now: Option<Duration>,
        method: u8,
        signature: &[u8],
        signed: &[u8],
    ) -> Result<(), AuthFailure> {
        if method != AUTH_DIGITAL_SIGNATURE && method != AUTH_ECDSA_P256 {
            return Err(AuthFailure::WrongMethod);
        }
        let now = UnixTime::since_unix_epoch(now.ok_or(AuthFailure::NoWallClock)?);
        let (first, rest) = chain.split_first().ok_or(AuthFailure::NoCertificate)?;
        let ee_der = CertificateDer::from(*first);
        let ee = EndEntityCert::try_from(&ee_der).map_err(|_| AuthFailure::BadCertificate)?;
        let anchors: Vec<_> = self
            .cas
            .iter()
            .filter_map(|ca| webpki::anchor_from_trusted_cert(ca).ok())
            .collect();
        let intermediates: Vec<CertificateDer<'_>> =
            rest.iter().map(|c| CertificateDer::from(*c)).collect();
        ee.verify_for_usage(
            CHAIN_ALGORITHMS,
            &anchors,
            &intermediates,
            now,
            IkeKeyPurpose,
            None,
            None,
        )
        .map_err(chain_failure)?;
        check_identity(&ee, id)?;
        let (algorithms, sig) = match method {
            AUTH_DIGITAL_SIGNATURE => split_signature(signature)?,
            AUTH_ECDSA_P256 => (ECDSA_P256_FIXED, signature),
            _ => return Err(AuthFailure::WrongMethod),
        };
        if algorithms
            .iter()
            .any(|a| ee.verify_signature(*a, signed, sig).is_ok())
        {
            Ok(())
        } else {
            Err(AuthFailure::BadSignature)
        }
    }
}

/// Verifiers of one signature algorithm, one per key type it may use.
type Verifiers = &'static [&'static dyn SignatureVerificationAlgorithm];

/// AUTH method 14's data: a one-octet length, the AlgorithmIdentifier and
/// the signature (RFC 7427 3); the identifier picks the verifier.
fn split_signature(data: &[u8]) -> Result<(Verifiers, &[u8]), AuthFailure> {
    let (&len, rest) = data.split_first().ok_or(AuthFailure::BadSignature)?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(AuthFailure::BadSignature);
    }
    let (alg, sig) = rest.split_at(len);
    VERIFIERS
        .iter()
        .find(|(id, _)| *id == alg)
        .map(|(_, v)| (*v, sig))
        .ok_or(AuthFailure::UnsupportedAlgorithm)
}

/// AUTH method 14's data for our signature.
pub fn signature_auth_data(algorithm: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + algorithm.len() + signature.len());
    // Every identifier we send is a constant shorter than 256 octets.
    out.push(u8::try_from(algorithm.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(algorithm);
    out.extend_from_slice(signature);
    out
}

fn chain_failure(e: PkiError) -> AuthFailure {
    match e {
        PkiError::CertExpired { .. } | PkiError::CertNotValidYet { .. } => AuthFailure::NotValidNow,
        PkiError::UnknownIssuer => AuthFailure::UntrustedChain,
        PkiError::BadDer | PkiError::BadDerTime => AuthFailure::BadCertificate,
        _ => AuthFailure::UntrustedChain,
    }
}

/// Whether the certificate names the ID payload's identity (RFC 4945
/// 3.1): an FQDN as a subjectAltName dNSName, an address as an
/// iPAddress, a DN as the subject.
fn check_identity(ee: &EndEntityCert<'_>, id: &IdPayload) -> Result<(), AuthFailure> {
    let name = match id.id_type {
        IdType::Fqdn => core::str::from_utf8(&id.data)
            .ok()
            .and_then(|s| ServerName::try_from(s).ok()),
        IdType::Ipv4Addr => <[u8; 4]>::try_from(id.data.as_slice())
            .ok()
            .map(|a| ServerName::from(std::net::IpAddr::from(a))),
        IdType::Ipv6Addr => <[u8; 16]>::try_from(id.data.as_slice())
            .ok()
            .map(|a| ServerName::from(std::net::IpAddr::from(a))),
        IdType::DerAsn1Dn => {
            return if id.data == sequence(ee.subject()) {
                Ok(())
            } else {
                Err(AuthFailure::IdentityNotInCertificate)
            };
        }
        _ => None,
    };
    let name = name.ok_or(AuthFailure::IdentityNotInCertificate)?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(|_| AuthFailure::IdentityNotInCertificate)
}

/// A DER SEQUENCE around `contents` (WebPKI hands out a certificate's
/// subject without its outer tag and length; ID_DER_ASN1_DN carries the
/// whole Name, RFC 7296 3.5).
fn sequence(contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let mut out = Vec::with_capacity(len + 4);
    out.push(0x30);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let octets = len.to_be_bytes();
        let skip = octets.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (octets.len() - skip) as u8);
        out.extend_from_slice(&octets[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

/// Extended key usages a peer's certificate may be restricted to (RFC
/// 4945 5.1.3.12): none at all, IPsec IKE, any, or TLS server or client
/// (which CAs commonly issue for IKE gateways).
#[derive(Debug, Clone, Copy)]
struct IkeKeyPurpose;

/// id-kp-serverAuth, id-kp-clientAuth, id-kp-ipsecIKE and
/// anyExtendedKeyUsage, as OID contents.
const ACCEPTED_EKUS: [&[u8]; 4] = [
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01],
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02],
    &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x11],
    &[0x55, 0x1d, 0x25, 0x00],
];

impl webpki::ExtendedKeyUsageValidator for IkeKeyPurpose {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), PkiError> {
        let mut present = Vec::new();
        for purpose in iter {
            let purpose = purpose?;
            if ACCEPTED_EKUS
                .iter()
                .any(|oid| purpose == webpki::KeyPurposeId::new(oid))
            {
                return Ok(());
            }
            present.push(purpose.to_decoded_oid());
        }
        if present.is_empty() {
            return Ok(());
        }
        Err(PkiError::RequiredEkuNotFoundContext(
            webpki::RequiredEkuNotFoundContext {
                required: webpki::KeyUsage::required(ACCEPTED_EKUS[2]),
                present,
            },
        ))
    }
}

/// ECDSA P-256 with SHA-256 and a fixed-size r | s signature, as AUTH
/// method 9 carries it (RFC 4754 7).
#[derive(Debug)]
struct EcdsaP256Fixed;

const ECDSA_P256_FIXED: Verifiers = &[&EcdsaP256Fixed];

impl SignatureVerificationAlgorithm for EcdsaP256Fixed {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), rustls_pki_types::InvalidSignature> {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key)
            .verify(message, signature)
            .map_err(|_| rustls_pki_types::InvalidSignature)
    }

    fn public_key_alg_id(&self) -> rustls_pki_types::AlgorithmIdentifier {
        rustls_pki_types::alg_id::ECDSA_P256
    }

    fn signature_alg_id(&self) -> rustls_pki_types::AlgorithmIdentifier {
        rustls_pki_types::alg_id::ECDSA_SHA256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_der_sequence_header_has_the_short_and_long_length_forms() {
        assert_eq!(sequence(&[1, 2]), vec![0x30, 2, 1, 2]);
        let long = vec![7u8; 300];
        let s = sequence(&long);
        assert_eq!(&s[..4], &[0x30, 0x82, 0x01, 0x2c]);
        assert_eq!(s.len(), 304);
    }

    #[test]
    fn method_14_data_names_its_algorithm() {
        let data = signature_auth_data(ALG_ED25519, &[9; 64]);
        let (_, sig) = split_signature(&data).unwrap();
        assert_eq!(sig, &[9; 64]);
        let mut unknown = data.clone();
        unknown[3] ^= 1;
        assert_eq!(
            split_signature(&unknown).err(),
            Some(AuthFailure::UnsupportedAlgorithm)
        );
        assert_eq!(
            split_signature(&[200, 1]).err(),
            Some(AuthFailure::BadSignature)
        );
        assert_eq!(split_signature(&[]).err(), Some(AuthFailure::BadSignature));
    }
}
