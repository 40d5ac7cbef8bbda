#![no_main]
//! The IKEv2 state machine under a hostile network: an initiator and a
//! responder run the real exchange while the input decides, datagram by
//! datagram, to deliver, drop, duplicate, corrupt or replace it, to inject
//! its own bytes, to advance the clock, or to rekey or delete SAs. Nothing panics,
//! every datagram handed in is counted, the responder's half-open SAs
//! stay within their limit, and driven by their deadlines alone both make
//! progress at each one until nothing is left.

use bitsgw_ike::crypto::Secret;
use bitsgw_ike::suite::{DhGroup, Encryption, EspProposal, IkeProposal, Prf};
use bitsgw_ike::wire::TrafficSelector;
use bitsgw_ike::{
    Authentication, ChildConfig, Endpoint, EndpointConfig, Event, Identity, Lifetimes, Mode, PeerConfig,
    Retransmit, Timestamp, Transmit,
};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::time::Duration;

fn config(initiator: bool) -> EndpointConfig {
    let (a, b) = (
        Identity::Fqdn("a.example".into()),
        Identity::Fqdn("b.example".into()),
    );
    let (na, nb) = (
        TrafficSelector::prefix("192.0.2.0".parse().unwrap(), 24),
        TrafficSelector::prefix("198.51.100.0".parse().unwrap(), 24),
    );
    let (local_id, remote_id, local_ts, remote_ts) = if initiator {
        (a, b, na, nb)
    } else {
        (b, a, nb, na)
    };
    EndpointConfig {
        peer: PeerConfig {
            name: "fuzz".into(),
            local_id,
            remote_id,
            auth: Authentication::Psk(Secret::new(b"fuzz-psk-not-a-secret".to_vec())),
            ike_proposals: vec![IkeProposal {
                encryption: vec![Encryption::AES128_GCM16],
                integrity: vec![],
                prf: vec![Prf::HmacSha256],
                groups: vec![DhGroup::Curve25519, DhGroup::Ecp256],
            }],
            esp_proposals: vec![EspProposal {
                encryption: vec![Encryption::AES128_GCM16],
                integrity: vec![],
                groups: vec![],
            }],
            children: vec![ChildConfig {
                name: "net".into(),
                local_ts: vec![local_ts],
                remote_ts: vec![remote_ts],
                mode: Mode::Tunnel,
            }],
            lifetimes: Lifetimes {
                ike: Duration::from_secs(3600),
                child: Duration::from_secs(600),
                jitter: Duration::ZERO,
            },
            liveness: Some(Duration::from_secs(20)),
            nat_keepalive: Some(Duration::from_secs(20)),
            retransmit: Retransmit::default(),
            initial_contact: true,
        },
        cookie_threshold: 2,
        max_half_open: 4,
        half_open_timeout: Duration::from_secs(30),
    }
}

fuzz_target!(|data: &[u8]| {
    let ia: SocketAddr = "192.0.2.1:500".parse().unwrap();
    let ra: SocketAddr = "198.51.100.1:500".parse().unwrap();
    let mut i = Endpoint::new(config(true)).expect("config");
    let mut r = Endpoint::new(config(false)).expect("config");
    let mut now = Timestamp::from_secs(1);
    let mut delivered = (0u64, 0u64);
    let Ok(mut ike) = i.initiate(now, ia, ra) else {
        return;
    };
    let mut children = Vec::new();
    let mut r_ike = None;
    let mut input = data;
    let mut flight: Vec<(bool, Transmit)> = Vec::new();
    while let [op, rest @ ..] = input {
        let op = *op;
        input = rest;
        flight.extend(std::iter::from_fn(|| i.poll_transmit()).map(|t| (true, t)));
        flight.extend(std::iter::from_fn(|| r.poll_transmit()).map(|t| (false, t)));
        for e in std::iter::from_fn(|| i.poll_event()) {
            match e {
                Event::ChildSaEstablished(c) => children.push(c.inbound_spi),
                Event::IkeSaRekeyed { new, .. } => ike = new,
                _ => {}
            }
        }
        for e in std::iter::from_fn(|| r.poll_event()) {
            match e {
                Event::IkeSaUp { ike, .. } | Event::IkeSaRekeyed { new: ike, .. } => {
                    r_ike = Some(ike)
                }
                _ => {}
            }
        }
        let take =
            |flight: &mut Vec<(bool, Transmit)>| (!flight.is_empty()).then(|| flight.remove(0));
        let mut deliver = |to_r: bool, bytes: &[u8], from: SocketAddr, to: SocketAddr| {
            if to_r {
                r.handle_datagram(now, from, to, bytes);
                delivered.1 += 1;
            } else {
                i.handle_datagram(now, from, to, bytes);
                delivered.0 += 1;
            }
        };
        match op % 8 {
            0 | 1 | 2 => {
                if let Some((to_r, t)) = take(&mut flight) {
                    deliver(to_r, &t.contents, t.local, t.remote);
                }
            }
            3 => {
                let _ = take(&mut flight);
            }
            4 => {
                if let Some((to_r, t)) = flight.first().cloned() {
                    deliver(to_r, &t.contents, t.local, t.remote);
                }
            }
            5 => {
                if let (Some((to_r, mut t)), [at, x, rest2 @ ..]) = (take(&mut flight), input) {
                    input = rest2;
                    let n = t.contents.len();
                    if n > 0 {
                        t.contents[usize::from(*at) % n] ^= x | 1;
                    }
                    deliver(to_r, &t.contents, t.local, t.remote);
                }
            }
            6 => {
                let [len, rest2 @ ..] = input else { break };
                let n = usize::from(*len).min(rest2.len());
                let (bytes, rest3) = rest2.split_at(n);
                input = rest3;
                deliver(
                    op & 0x10 != 0,
                    bytes,
                    if op & 0x10 != 0 { ia } else { ra },
                    if op & 0x10 != 0 { ra } else { ia },
                );
            }
            _ => match op >> 3 {
                0..=20 => now = now.saturating_add(Duration::from_millis(u64::from(op) * 97)),
                21..=22 => {
                    if let Some(spi) = children.pop() {
                        let _ = i.delete_child(now, ike, spi);
                    }
                }
                23..=24 => {
                    if let Some(spi) = children.last() {
                        let _ = i.rekey_child(now, ike, *spi);
                        if let Some(id) = r_ike {
                            let _ = r.rekey_ike(now, id);
                        }
                    }
                }
                25..=26 => {
                    let _ = i.rekey_ike(now, ike);
                }
                27..=28 => {
                    let _ = i.delete_ike(now, ike);
                }
                _ => {
                    if let Some(t) = i.poll_timeout() {
                        now = now.max(t);
                    }
                    i.handle_timeout(now);
                    r.handle_timeout(now);
                }
            },
        }
        i.handle_timeout(now);
        r.handle_timeout(now);
        assert!(r.half_open_count() <= 4);
    }
    assert_eq!(i.counters().datagrams_received, delivered.0);
    assert_eq!(r.counters().datagrams_received, delivered.1);
    // Driven by their own deadlines with nothing delivered any more, every
    // deadline handled moves on (no busy loop) and in the end nothing is
    // left: half-open SAs expire, unanswered requests are given up.
    for e in [&mut i, &mut r] {
        let mut left = 1000;
        while let Some(t) = e.poll_timeout() {
            e.handle_timeout(t);
            while e.poll_transmit().is_some() {}
            assert!(
                e.poll_timeout().is_none_or(|next| next > t),
                "deadline {t:?} stays"
            );
            left -= 1;
            assert!(left > 0, "deadlines without end");
        }
        assert_eq!(e.ike_sa_count(), 0);
    }
});
