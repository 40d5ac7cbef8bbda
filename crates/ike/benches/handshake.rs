//! IKE handshakes on one core: two in-memory endpoints run IKE_SA_INIT
//! and IKE_AUTH (PSK, one CHILD_SA, RFC 7296 1.2), and each role's share
//! is timed apart, so the figures are the cost of one handshake to an
//! initiator and to a responder.
//!
//! Groups:
//! - `handshake/<ike proposal>/initiator`, `.../responder`: the time spent
//!   in that endpoint's calls (`initiate`, `handle_datagram`,
//!   `poll_transmit`, `poll_event`) during one whole exchange, with fresh
//!   endpoints each time (their creation is not timed). Proposals:
//!   AES-128-GCM with groups 19 (P-256) and 31 (X25519).
//! - `ike_sa_init/<group>/stateful`: the responder answering one
//!   IKE_SA_INIT below its cookie threshold (Diffie-Hellman, key
//!   derivation, a half-open IKE SA), a fresh responder each time.
//! - `ike_sa_init/<group>/cookie`: the responder above its threshold
//!   answering the same request with a stateless COOKIE (RFC 7296 2.6): the
//!   cost of one message of a half-open flood.
//! - `ring/<group>`: one side of a raw ring key agreement (generate a key
//!   pair, compute the public value, agree with the peer's), the unit the
//!   others are compared with in BENCHMARKS.md.
//!
//! `cargo bench -p bitsgw-ike --bench handshake`

#[path = "../tests/common/peers.rs"]
mod peers;

use bitsgw_ike::{Endpoint, Event, Timestamp};
use criterion::{black_box, Criterion};
use ring::agreement;
use ring::rand::SystemRandom;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const ESP: &str = "aes128gcm16";

fn addresses() -> (SocketAddr, SocketAddr) {
    (
        "192.0.2.1:500".parse().expect("address"),
        "198.51.100.1:500".parse().expect("address"),
    )
}

fn endpoint(initiator: bool, ike: &str, cookie_threshold: usize) -> Endpoint {
    Endpoint::new(peers::endpoint(initiator, ike, ESP, cookie_threshold, 1024))
        .expect("valid configuration")
}

/// One whole exchange between fresh endpoints; the time spent in the
/// initiator's calls and in the responder's.
fn handshake(ike: &str) -> (Duration, Duration) {
    let (ia, ra) = addresses();
    let (mut i, mut r) = (endpoint(true, ike, 64), endpoint(false, ike, 64));
    let now = Timestamp::from_secs(1);
    let (mut ti, mut tr) = (Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    i.initiate(now, ia, ra).expect("initiate");
    let mut to_r: Vec<_> = std::iter::from_fn(|| i.poll_transmit()).collect();
    ti += start.elapsed();
    let mut up = false;
    while !to_r.is_empty() {
        let start = Instant::now();
        for t in to_r.drain(..) {
            r.handle_datagram(now, t.local, t.remote, &t.contents);
        }
        let to_i: Vec<_> = std::iter::from_fn(|| r.poll_transmit()).collect();
        while r.poll_event().is_some() {}
        tr += start.elapsed();
        let start = Instant::now();
        for t in to_i {
            i.handle_datagram(now, t.local, t.remote, &t.contents);
        }
        to_r.extend(std::iter::from_fn(|| i.poll_transmit()));
        while let Some(e) = i.poll_event() {
            up |= matches!(e, Event::ChildSaEstablished(_));
        }
        ti += start.elapsed();
    }
    assert!(up, "no CHILD_SA");
    (ti, tr)
}

fn handshakes(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    for ike in [
        "aes128gcm16-prfsha256-ecp256",
        "aes128gcm16-prfsha256-x25519",
    ] {
        g.bench_function(format!("{ike}/initiator"), |b| {
            b.iter_custom(|n| (0..n).map(|_| handshake(ike).0).sum());
        });
        g.bench_function(format!("{ike}/responder"), |b| {
            b.iter_custom(|n| (0..n).map(|_| handshake(ike).1).sum());
        });
    }
    g.finish();
}

/// An IKE_SA_INIT request of a fresh initiator.
fn ike_sa_init(ike: &str) -> Vec<u8> {
    let (ia, ra) = addresses();
    let mut i = endpoint(true, ike, 64);
    i.initiate(Timestamp::ZERO, ia, ra).expect("initiate");
    i.poll_transmit().expect("IKE_SA_INIT").contents
}

fn ike_sa_init_answers(c: &mut Criterion) {
    let mut g = c.benchmark_group("ike_sa_init");
    let (ia, ra) = addresses();
    let now = Timestamp::from_secs(1);
    for (group, ike) in [
        ("ecp256", "aes128gcm16-prfsha256-ecp256"),
        ("x25519", "aes128gcm16-prfsha256-x25519"),
    ] {
        let request = ike_sa_init(ike);
        g.bench_function(format!("{group}/stateful"), |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| {
                        let mut r = endpoint(false, ike, 64);
                        let start = Instant::now();
                        r.handle_datagram(now, ia, ra, &request);
                        let answer = r.poll_transmit().expect("answer");
                        let took = start.elapsed();
                        assert_eq!((r.half_open_count(), answer.remote), (1, ia));
                        took
                    })
                    .sum()
            });
        });
        // Threshold 0: every request must carry a cookie; this one does
        // not, so it gets one and leaves no state.
        let mut r = endpoint(false, ike, 0);
        g.bench_function(format!("{group}/cookie"), |b| {
            b.iter(|| {
                r.handle_datagram(now, ia, ra, black_box(&request));
                r.poll_transmit().expect("COOKIE")
            });
        });
        assert_eq!(r.ike_sa_count(), 0);
    }
    g.finish();
}

fn raw_agreement(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    let rng = SystemRandom::new();
    for (group, alg) in [
        ("ecp256", &agreement::ECDH_P256),
        ("x25519", &agreement::X25519),
    ] {
        let peer = agreement::EphemeralPrivateKey::generate(alg, &rng)
            .and_then(|k| k.compute_public_key())
            .expect("peer key");
        let peer = agreement::UnparsedPublicKey::new(alg, peer.as_ref().to_vec());
        g.bench_function(group, |b| {
            b.iter(|| {
                let key = agreement::EphemeralPrivateKey::generate(alg, &rng).expect("key");
                let public = key.compute_public_key().expect("public");
                let shared = agreement::agree_ephemeral(key, &peer, |s| s[0]).expect("agree");
                (public, shared)
            });
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    raw_agreement(&mut c);
    handshakes(&mut c);
    ike_sa_init_answers(&mut c);
    c.final_summary();
}
