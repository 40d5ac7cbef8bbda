//! Authentication by digital signatures (RFC 7427) with X.509
//! certificates made at test time, between two in-memory endpoints:
//! what authenticates, what is refused and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitsgw_ike::certs::{
    certificates_from_pem, private_key_from_pem, AuthFailure, CredentialError, Credentials,
    KeyKind, SigningKey,
};
use bitsgw_ike::crypto::Secret;
use bitsgw_ike::wire::NotifyType;
use bitsgw_ike::{Authentication, DownReason, DropReason, Event, Identity, PeerConfig};
use std::time::Duration;

#[path = "common/pair.rs"]
mod pair;
#[path = "common/pki.rs"]
mod pki;

use pair::*;

/// Wall-clock time for the certificate tests.
fn wall_clock() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

/// A pair authenticating by certificates from `i` and `r`, trusting
/// `i_trusts` and `r_trusts`, with the wall clock set.
fn cert_pair(i: &pki::Leaf, r: &pki::Leaf, i_trusts: &[&pki::Ca], r_trusts: &[&pki::Ca]) -> Pair {
    clocked(Pair::new(
        cert_peer(true, i, i_trusts),
        cert_peer(false, r, r_trusts),
    ))
}

/// `peer(initiator)` authenticating with `leaf`, trusting `cas`.
fn cert_peer(initiator: bool, leaf: &pki::Leaf, cas: &[&pki::Ca]) -> PeerConfig {
    let mut c = peer(initiator);
    c.auth = Authentication::Certificate(Box::new(leaf.credentials(cas)));
    c
}

/// Both sides told the wall-clock time.
fn clocked(mut p: Pair) -> Pair {
    p.i.set_wall_clock(wall_clock());
    p.r.set_wall_clock(wall_clock());
    p
}

/// Establishes an IKE SA and CHILD_SA authenticated by certificates of a
/// CA with key `alg_ca`, the initiator's key `alg_i` and the responder's
/// `alg_r`; returns the IKE_AUTH request's size (fragmentation, RFC 7383,
/// is not implemented).
fn establish_by_certificates(alg_ca: Alg, alg_i: Alg, alg_r: Alg) -> usize {
    let ca = pki::Ca::new(alg_ca, "bitsgw test CA");
    let a = ca.leaf(alg_i, &["a.example"]);
    let b = ca.leaf(alg_r, &["b.example"]);
    let mut p = cert_pair(&a, &b, &[&ca], &[&ca]);
    p.initiate();
    let init = p.i.poll_transmit().unwrap();
    p.r.handle_datagram(p.now, p.ia, p.ra, &init.contents);
    let resp = p.r.poll_transmit().unwrap();
    p.i.handle_datagram(p.now, p.ra, p.ia, &resp.contents);
    let auth = p.i.poll_transmit().unwrap();
    let auth_len = auth.contents.len();
    p.r.handle_datagram(p.now, p.ia, p.ra, &auth.contents);
    p.pump();
    let (ei, er) = (events(&mut p.i), events(&mut p.r));
    let (ci, cr) = (child(&ei), child(&er));
    assert_eq!(ci.inbound, cr.outbound);
    assert_eq!(ci.outbound, cr.inbound);
    for e in [&p.i, &p.r] {
        assert_eq!(e.counters().auth_refused, Default::default());
        assert_eq!(
            e.counters().received(NotifyType::SignatureHashAlgorithms),
            1
        );
    }
    auth_len
}

use pki::Alg;

#[test]
fn certificates_with_ecdsa_p256_authenticate_both_sides() {
    let auth_len = establish_by_certificates(Alg::P256, Alg::P256, Alg::P256);
    // RFC 7383 fragmentation is not implemented: an IKE_AUTH request with
    // a P-256 certificate (a few hundred octets) stays well inside one
    // IPv6 minimum-MTU datagram (1280 less 48 octets of IPv6 and UDP).
    assert!(auth_len < 1232, "IKE_AUTH of {auth_len} octets");
}

#[test]
fn certificates_with_ed25519_authenticate_both_sides() {
    let auth_len = establish_by_certificates(Alg::Ed25519, Alg::Ed25519, Alg::Ed25519);
    assert!(auth_len < 1232, "IKE_AUTH of {auth_len} octets");
}

#[test]
fn certificates_of_mixed_key_types_authenticate() {
    establish_by_certificates(Alg::P256, Alg::Ed25519, Alg::P256);
    establish_by_certificates(Alg::Ed25519, Alg::P256, Alg::Ed25519);
}

/// Runs the exchange that the responder must refuse, and checks that it
/// did so with AUTHENTICATION_FAILED (RFC 7296 2.21.2), counted for `why`,
/// and that no IKE SA came up on either side.
fn responder_refuses(mut p: Pair, why: AuthFailure) {
    p.initiate();
    p.pump();
    assert_eq!(
        down(&events(&mut p.i)),
        DownReason::PeerNotify(NotifyType::AuthenticationFailed)
    );
    assert!(events(&mut p.r).is_empty(), "no IKE SA on the responder");
    assert_eq!(p.r.counters().sent(NotifyType::AuthenticationFailed), 1);
    assert_eq!(
        p.r.counters().refused(why),
        1,
        "{:?}",
        p.r.counters().auth_refused
    );
    assert_eq!(p.r.counters().auth_refused.values().sum::<u64>(), 1);
    assert_eq!(p.i.ike_sa_count(), 0);
    assert_eq!(
        p.r.half_open_count(),
        1,
        "kept only to answer retransmissions"
    );
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let ca = pki::Ca::new(Alg::P256, "bitsgw test CA");
    let other = pki::Ca::new(Alg::P256, "bitsgw test CA");
    let a = other.leaf(Alg::P256, &["a.example"]);
    let b = ca.leaf(Alg::P256, &["b.example"]);
    responder_refuses(
        cert_pair(&a, &b, &[&ca], &[&ca]),
        AuthFailure::UntrustedChain,
    );
}

#[test]
fn a_certificate_not_naming_the_id_is_refused() {
    // The initiator says it is a.example (its configured ID, which the
    // responder expects) but its certificate is for c.example only.
    let ca = pki::Ca::new(Alg::P256, "bitsgw test CA");
    let a = ca.leaf(Alg::P256, &["c.example", "192.0.2.1"]);
    let b = ca.leaf(Alg::P256, &["b.example"]);
    responder_refuses(
        cert_pair(&a, &b, &[&ca], &[&ca]),
        AuthFailure::IdentityNotInCertificate,
    );
}

#[test]
fn an_id_other_than_the_configured_one_is_refused_even_with_a_valid_certificate() {
    let ca = pki::Ca::new(Alg::P256, "bitsgw test CA");
    let a = ca.leaf(Alg::P256, &["c.example"]);
    let b = ca.leaf(Alg::P256, &["b.example"]);
    let mut ci = cert_peer(true, &a, &[&ca]);
    ci.local_id = Identity::Fqdn("c.example".into());
    let p = clocked(Pair::new(ci, cert_peer(false, &b, &[&ca])));
    responder_refuses(p, AuthFailure::IdentityMismatch);
}

#[test]
fn an_ip_address_id_matches_the_certificate_s_ip_address() {
    let ip = |s: &str| Identity::Ipv4(s.parse().unwrap());
    id_must_be_in_certificate(Alg::P256, "192.0.2.1", ip("192.0.2.1"), ip("192.0.2.9"));
}

/// The initiator's certificate (for `name`, key `alg`) authenticates it
/// as `named`, configured as its ID on both sides, but not as `unnamed`.
fn id_must_be_in_certificate(alg: Alg, name: &str, named: Identity, unnamed: Identity) {
    let ca = pki::Ca::new(Alg::P256, "bitsgw test CA");
    let a = ca.leaf(alg, &[name]);
    let b = ca.leaf(Alg::P256, &["b.example"]);
    let (mut ci, mut cr) = (cert_peer(true, &a, &[&ca]), cert_peer(false, &b, &[&ca]));
    ci.local_id = named.clone();
    cr.remote_id = named;
    establish(&mut clocked(Pair::new(ci.clone(), cr.clone())));
    ci.local_id = unnamed.clone();
    cr.remote_id = unnamed;
    responder_refuses(
        clocked(Pair::new(ci, cr)),
        AuthFailure::IdentityNotInCertificate,
    );
}

#[test]
fn an_expired_certificate_is_refused() {
    let ca = pki::Ca::new(Alg::P256, "bitsgw test CA");
    let a = ca.leaf_valid_in(Alg::P256, &["a.example"], 2020);
    let b = ca.leaf(Alg::P256, &["b.example"]);
    responder_refuses(cert_pair(&a, &b, &[&ca], &[&ca]), AuthFailure::NotValidNow);
}

#[test]
fn a_certificate_is_refused_without_a_wall_clock() {
    let ca = pki::Ca::new(Alg::Ed25519, "bitsgw test CA");
    let a = ca.leaf(Alg::Ed25519, &["a.example"]);
    let b = ca.leaf(Alg::Ed25519, &["b.example"]);
    let mut p = Pair::new(cert_peer(true, &a, &[&ca]), cert_peer(false, &b, &[&ca]));
    p.i.set_wall_clock(wall_clock());
    responder_refuses(p, AuthFailure::NoWallClock);
}

#[test]
fn the_initiator_refuses_a_responder_certificate_from_another_ca() {
    let ca = pki::Ca::new(Alg::P256, "bitsgw test CA");
    let other = pki::Ca::new(Alg::Ed25519, "bitsgw other CA");
    let a = ca.leaf(Alg::P256, &["a.example"]);
    let b = other.leaf(Alg::Ed25519, &["b.example"]);
    let mut p = cert_pair(&a, &b, &[&ca], &[&ca]);
    p.initiate();
    p.pump();
    assert_eq!(down(&events(&mut p.i)), DownReason::AuthenticationFailed);
    assert_eq!(p.i.counters().refused(AuthFailure::UntrustedChain), 1);
    assert_eq!(p.i.ike_sa_count(), 0);
    // The responder authenticated the initiator and established the IKE
    // SA; the initiator's INFORMATIONAL AUTHENTICATION_FAILED (RFC 7296
    // 2.21.2) takes it down again.
    assert_eq!(p.i.counters().sent(NotifyType::AuthenticationFailed), 1);
    let er = events(&mut p.r);
    assert!(matches!(er[0], Event::IkeSaUp { .. }), "{er:?}");
    assert_eq!(
        down(&er),
        DownReason::PeerNotify(NotifyType::AuthenticationFailed)
    );
    assert!(
        er.iter().any(|e| matches!(e, Event::ChildSaDeleted { .. })),
        "{er:?}"
    );
    assert_eq!(p.r.ike_sa_count(), 0);
    // Its answer finds no IKE SA on the initiator.
    assert_eq!(p.i.counters().dropped(DropReason::UnknownSpi), 1);
}

#[test]
fn a_psk_peer_and_a_certificate_peer_do_not_authenticate_each_other() {
    let ca = pki::Ca::new(Alg::P256, "bitsgw test CA");
    let b = ca.leaf(Alg::P256, &["b.example"]);
    let p = clocked(Pair::new(peer(true), cert_peer(false, &b, &[&ca])));
    responder_refuses(p, AuthFailure::WrongMethod);
}

#[test]
fn a_key_that_is_not_the_certificate_s_is_refused_in_the_configuration() {
    let ca = pki::Ca::new(Alg::P256, "bitsgw test CA");
    let a = ca.leaf(Alg::P256, &["a.example"]);
    let b = ca.leaf(Alg::P256, &["b.example"]);
    let key = SigningKey::from_pkcs8(Secret::new(b.key_der.clone())).unwrap();
    assert_eq!(
        Credentials::new(a.der.clone(), key, vec![ca.der.clone()]).unwrap_err(),
        CredentialError::KeyMismatch
    );
    let key = SigningKey::from_pkcs8(Secret::new(a.key_der.clone())).unwrap();
    assert_eq!(
        Credentials::new(a.der.clone(), key, vec![]).unwrap_err(),
        CredentialError::NoCa
    );
    assert_eq!(
        SigningKey::from_pkcs8(Secret::new(b"not a key".to_vec())).unwrap_err(),
        CredentialError::UnsupportedKey
    );
    // A key ID is bound to no certificate.
    let mut c = cert_peer(true, &a, &[&ca]);
    c.remote_id = Identity::KeyId(b"b".to_vec());
    let e = config(c).validate().unwrap_err().to_string();
    assert_eq!(
        e,
        "peer site: remote_id: a key ID is not bound to a certificate"
    );
}

#[test]
fn pem_files_as_rcgen_writes_them_are_read() {
    let ca = pki::Ca::new(Alg::Ed25519, "bitsgw test CA");
    let a = ca.leaf(Alg::Ed25519, &["a.example"]);
    let key = private_key_from_pem(a.key_pem.as_bytes()).unwrap();
    assert_eq!(key.kind(), KeyKind::Ed25519);
    let certs = certificates_from_pem(format!("{}{}", a.pem, ca.pem).as_bytes()).unwrap();
    assert_eq!(certs, vec![a.der.clone(), ca.der.clone()]);
    assert_eq!(
        certificates_from_pem(a.key_pem.as_bytes()).unwrap_err(),
        CredentialError::NoPem("CERTIFICATE")
    );
    assert_eq!(
        private_key_from_pem(a.pem.as_bytes()).unwrap_err(),
        CredentialError::NoPem("PRIVATE KEY")
    );
    let creds = Credentials::new(certs[0].clone(), key, vec![certs[1].clone()]).unwrap();
    // RFC 7296 3.7: one SHA-1 hash per trusted CA.
    assert_eq!(creds.certreq_authorities().len(), 20);
    assert!(!format!("{creds:?}").contains(&hex::encode(&a.key_der)));
}

#[test]
fn a_distinguished_name_id_matches_the_certificate_s_subject() {
    let dn = |cn: &str| Identity::Dn(pki::common_name_dn(cn));
    id_must_be_in_certificate(Alg::Ed25519, "a.example", dn("a.example"), dn("c.example"));
}

/// The result of verifying, as b.example trusting `ca`, a.example's
/// (`leaf`) AUTH `method` with `signature` over `signed`.
fn verify_as_peer(
    ca: &pki::Ca,
    leaf: &pki::Leaf,
    method: u8,
    signature: &[u8],
    signed: &[u8],
) -> Result<(), AuthFailure> {
    use bitsgw_ike::wire::{IdPayload, IdType};
    let ours = ca.leaf(Alg::P256, &["b.example"]).credentials(&[ca]);
    let id = IdPayload {
        id_type: IdType::Fqdn,
        data: b"a.example".to_vec(),
    };
    ours.verify_peer(
        &[&leaf.der],
        &id,
        Some(wall_clock()),
        method,
        signature,
        signed,
    )
}

#[test]
fn rfc_4754_ecdsa_auth_method_9_is_verified() {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let ca = pki::Ca::new(Alg::P256, "bitsgw test CA");
    let a = ca.leaf(Alg::P256, &["a.example"]);
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &a.key_der, &rng).unwrap();
    let signed = b"the octets of RFC 7296 2.15";
    let sig = key.sign(&rng, signed).unwrap();
    assert_eq!(sig.as_ref().len(), 64, "r | s");
    let verify = |method, sig: &[u8], signed: &[u8]| verify_as_peer(&ca, &a, method, sig, signed);
    assert_eq!(verify(9, sig.as_ref(), signed), Ok(()));
    assert_eq!(
        verify(9, sig.as_ref(), b"other octets"),
        Err(AuthFailure::BadSignature)
    );
    // Method 14 carries an AlgorithmIdentifier first: a bare r | s is
    // refused (as a bad length or an unknown identifier, by its octets).
    assert!(verify(14, sig.as_ref(), signed).is_err());
    // The shared-key method is not a signature.
    assert_eq!(
        verify(2, sig.as_ref(), signed),
        Err(AuthFailure::WrongMethod)
    );
}

#[test]
fn an_ecdsa_p384_signature_with_sha384_is_verified() {
    use bitsgw_ike::certs::{signature_auth_data, ALG_ECDSA_SHA256, ALG_ECDSA_SHA384};
    use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_ASN1_SIGNING};
    let ca = pki::Ca::new(Alg::P256, "bitsgw test CA");
    let a = ca.leaf(Alg::P384, &["a.example"]);
    let rng = ring::rand::SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &a.key_der, &rng).unwrap();
    let signed = b"the octets of RFC 7296 2.15";
    let sig = key.sign(&rng, signed).unwrap();
    let with = |alg| signature_auth_data(alg, sig.as_ref());
    assert_eq!(
        verify_as_peer(&ca, &a, 14, &with(ALG_ECDSA_SHA384), signed),
        Ok(())
    );
    // The identifier must name the hash that was used.
    assert_eq!(
        verify_as_peer(&ca, &a, 14, &with(ALG_ECDSA_SHA256), signed),
        Err(AuthFailure::BadSignature)
    );
}

#[test]
fn certificates_of_an_intermediate_ca_are_sent_and_chain_to_the_root() {
    let root = pki::Ca::new(Alg::P256, "bitsgw root CA");
    let sub = root.intermediate(Alg::Ed25519, "bitsgw sub CA");
    let a = sub.leaf(Alg::P256, &["a.example"]);
    let b = sub.leaf(Alg::Ed25519, &["b.example"]);
    // Both trust the root only; each sends the intermediate.
    let with_sub = |leaf: &pki::Leaf, initiator| {
        let creds = leaf
            .credentials(&[&root])
            .with_intermediates(vec![sub.der.clone()])
            .unwrap();
        let mut c = peer(initiator);
        c.auth = Authentication::Certificate(Box::new(creds));
        c
    };
    establish(&mut clocked(Pair::new(
        with_sub(&a, true),
        with_sub(&b, false),
    )));
    // Without the intermediate the path ends at the sub CA nobody trusts.
    let without = cert_peer(true, &a, &[&root]);
    responder_refuses(
        clocked(Pair::new(without, with_sub(&b, false))),
        AuthFailure::UntrustedChain,
    );
}

/// The CA key hashes of the CERTREQ in a responder's IKE_SA_INIT answer.
fn certreq_hashes(response: &[u8]) -> Vec<Vec<u8>> {
    let m = bitsgw_ike::wire::Message::parse(response).unwrap();
    m.payloads
        .iter()
        .filter_map(|p| match p {
            bitsgw_ike::wire::Payload::CertReq(c) => Some(c.data.chunks(20).map(<[u8]>::to_vec)),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn one_endpoint_verifies_each_peer_with_that_peer_s_cas() {
    // Two peers of one responder, each trusting its own CA: the initiator
    // a.example by the first, c.example by the second.
    let (ca1, ca2) = (
        pki::Ca::new(Alg::P256, "bitsgw test CA 1"),
        pki::Ca::new(Alg::P256, "bitsgw test CA 2"),
    );
    let responder = |ca: &pki::Ca, name: &str, remote: &str| PeerConfig {
        name: name.into(),
        remote_id: Identity::Fqdn(remote.into()),
        ..cert_peer(false, &ca.leaf(Alg::P256, &["b.example"]), &[ca])
    };
    let initiator = |leaf: &pki::Leaf, id: &str, trusts: &pki::Ca| PeerConfig {
        local_id: Identity::Fqdn(id.into()),
        ..cert_peer(true, leaf, &[trusts])
    };
    let two_peers = |p: &mut Pair| {
        p.r = bitsgw_ike::Endpoint::new(config(responder(&ca1, "by-ca1", "a.example"))).unwrap();
        p.r.add_peer(responder(&ca2, "by-ca2", "c.example"))
            .unwrap();
        p.r.set_wall_clock(wall_clock());
    };

    // c.example with a certificate of CA 2: the second peer, verified
    // with CA 2; the IKE_SA_INIT answer asked for both CAs.
    let c = ca2.leaf(Alg::P256, &["c.example"]);
    let mut p = clocked(Pair::new(initiator(&c, "c.example", &ca2), peer(false)));
    two_peers(&mut p);
    p.initiate();
    let init = p.i.poll_transmit().unwrap();
    p.r.handle_datagram(p.now, p.ia, p.ra, &init.contents);
    let answer = p.r.poll_transmit().unwrap();
    let asked = certreq_hashes(&answer.contents);
    let mut expect = ca_hashes(&ca1);
    expect.extend(ca_hashes(&ca2));
    assert_eq!(asked, expect);
    p.i.handle_datagram(p.now, p.ra, p.ia, &answer.contents);
    p.pump();
    let er = events(&mut p.r);
    assert!(
        matches!(&er[0], Event::IkeSaUp { peer, .. } if peer == "by-ca2"),
        "{er:?}"
    );
    assert_eq!(child(&er).name, "by-ca2");

    // c.example with a certificate of CA 1 (which the first peer
    // trusts): the second peer's CA does not, so it is refused.
    let c = ca1.leaf(Alg::P256, &["c.example"]);
    let mut p = clocked(Pair::new(initiator(&c, "c.example", &ca2), peer(false)));
    two_peers(&mut p);
    responder_refuses(p, AuthFailure::UntrustedChain);
}

/// The SHA-1 hash of `ca`'s key, as a CERTREQ names it (RFC 7296 3.7).
fn ca_hashes(ca: &pki::Ca) -> Vec<Vec<u8>> {
    ca.leaf(Alg::P256, &["x.example"])
        .credentials(&[ca])
        .certreq_authorities()
        .chunks(20)
        .map(<[u8]>::to_vec)
        .collect()
}
