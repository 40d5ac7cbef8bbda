//! Two endpoints, an initiator and a responder, talking in memory: the
//! whole IKE_SA_INIT / IKE_AUTH / INFORMATIONAL exchange, its error paths,
//! retransmission and hostile input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitsgw_ike::crypto::Secret;
use bitsgw_ike::suite::{DhGroup, Encryption, EspProposal, IkeProposal, Integrity, Prf};
use bitsgw_ike::wire::NotifyType;
use bitsgw_ike::{
    Authentication, ChildConfig, ChildSaEstablished, DownReason, DropReason, Endpoint, Event,
    Identity, Lifetimes, Mode, PeerConfig, Timestamp,
};
use std::net::SocketAddr;
use std::time::Duration;

#[path = "common/pair.rs"]
mod pair;

use pair::*;

#[test]
fn both_sides_key_the_same_child_sa_for_every_suite() {
    let cases = [
        (
            Encryption::AES128_GCM16,
            None,
            DhGroup::Ecp256,
            Encryption::AES128_GCM16,
            None,
        ),
        (
            Encryption::AES256_GCM16,
            None,
            DhGroup::Curve25519,
            Encryption::AES256_GCM16,
            None,
        ),
        (
            Encryption::AES128_CBC,
            Some(Integrity::HmacSha256_128),
            DhGroup::Ecp256,
            Encryption::AES128_CBC,
            Some(Integrity::HmacSha256_128),
        ),
        (
            Encryption::AES256_CBC,
            Some(Integrity::HmacSha256_128),
            DhGroup::Curve25519,
            Encryption::AES256_CBC,
            Some(Integrity::HmacSha256_128),
        ),
    ];
    for (ike_enc, ike_integ, group, esp_enc, esp_integ) in cases {
        let ike = IkeProposal {
            encryption: vec![ike_enc],
            integrity: ike_integ.into_iter().collect(),
            prf: vec![Prf::HmacSha256],
            groups: vec![group],
        };
        let esp = EspProposal {
            encryption: vec![esp_enc],
            integrity: esp_integ.into_iter().collect(),
            groups: vec![],
        };
        let (mut a, mut b) = (peer(true), peer(false));
        for c in [&mut a, &mut b] {
            c.ike_proposals = vec![ike.clone()];
            c.esp_proposals = vec![esp.clone()];
        }
        let mut p = Pair::new(a, b);
        p.initiate();
        assert_eq!(
            p.pump(),
            4,
            "IKE_SA_INIT and IKE_AUTH, request and response"
        );
        let (ci, cr) = (child(&events(&mut p.i)), child(&events(&mut p.r)));
        assert_eq!(
            (ci.inbound_spi, ci.outbound_spi),
            (cr.outbound_spi, cr.inbound_spi)
        );
        assert_eq!((&ci.inbound, &ci.outbound), (&cr.outbound, &cr.inbound));
        assert_eq!(ci.suite.encryption, esp_enc);
        assert_eq!(ci.suite.integrity, esp_integ);
        assert_eq!(ci.inbound.encryption.len(), esp_enc.key_len());
        assert_eq!(ci.inbound.salt.len(), if esp_enc.is_aead() { 4 } else { 0 });
        assert_eq!(
            ci.inbound.integrity.len(),
            if esp_integ.is_some() { 32 } else { 0 }
        );
        assert_eq!(ci.mode, Mode::Tunnel);
        assert!(!format!("{ci:?}").contains(&format!("{:?}", ci.inbound.encryption.expose())));
        let c = p.i.counters();
        assert_eq!(c.requests_sent.ike_sa_init, 1);
        assert_eq!(c.requests_sent.ike_auth, 1);
        assert_eq!(c.responses_received.ike_auth, 1);
        assert_eq!(c.sent(NotifyType::NatDetectionSourceIp), 1);
        assert_eq!(c.received(NotifyType::NatDetectionSourceIp), 1);
        assert_eq!(c.sent(NotifyType::InitialContact), 1);
        assert_eq!(p.r.counters().received(NotifyType::InitialContact), 1);
        assert_eq!(p.r.counters().total_drops(), 0);
        assert_eq!(c.total_drops(), 0);
    }
}

#[test]
fn no_nat_is_detected_between_direct_addresses() {
    let mut p = Pair::new(peer(true), peer(false));
    p.initiate();
    p.pump();
    for e in events(&mut p.i).into_iter().chain(events(&mut p.r)) {
        if let Event::IkeSaUp {
            nat_local,
            nat_remote,
            ..
        } = e
        {
            assert!(!nat_local && !nat_remote);
        }
    }
}

#[test]
fn a_translated_address_is_detected() {
    let mut p = Pair::new(peer(true), peer(false));
    p.initiate();
    // The responder sees the initiator's datagrams from another address,
    // as behind a NAT (RFC 7296 2.23).
    let nat: SocketAddr = "203.0.113.9:4321".parse().unwrap();
    let t = p.i.poll_transmit().unwrap();
    p.r.handle_datagram(p.now, nat, t.remote, &t.contents);
    let t = p.r.poll_transmit().unwrap();
    assert_eq!(t.remote, nat);
    p.i.handle_datagram(p.now, t.local, p.ia, &t.contents);
    // RFC 7296 2.23: the initiator moves to port 4500 for IKE_AUTH, and
    // the responder answers where the request came from.
    let t = p.i.poll_transmit().unwrap();
    assert_eq!(t.local, "192.0.2.1:4500".parse().unwrap());
    assert_eq!(t.remote, "198.51.100.1:4500".parse().unwrap());
    let nat_t: SocketAddr = "203.0.113.9:4322".parse().unwrap();
    p.r.handle_datagram(p.now, nat_t, t.remote, &t.contents);
    let t = p.r.poll_transmit().unwrap();
    assert_eq!(
        (t.local, t.remote),
        ("198.51.100.1:4500".parse().unwrap(), nat_t)
    );
    p.i.handle_datagram(
        p.now,
        t.local,
        "192.0.2.1:4500".parse().unwrap(),
        &t.contents,
    );
    let up = |evs: Vec<Event>| {
        evs.into_iter()
            .find_map(|e| match e {
                Event::IkeSaUp {
                    nat_local,
                    nat_remote,
                    ..
                } => Some((nat_local, nat_remote)),
                _ => None,
            })
            .unwrap()
    };
    let (er, ei) = (events(&mut p.r), events(&mut p.i));
    assert!(child(&er).udp_encapsulation && child(&ei).udp_encapsulation);
    assert_eq!(child(&er).remote, nat_t);
    assert_eq!(up(er), (false, true));
    assert_eq!(up(ei), (true, false));
}

/// The NAT in front of the initiator: its address, and the port it maps
/// the initiator's port 500 to.
const NAT: &str = "203.0.113.9";
const NAT_IKE_PORT: u16 = 4321;

/// [`Pair::pump`] with the initiator behind a NAT that maps its port 500
/// to `NAT:NAT_IKE_PORT` and its port 4500 to `NAT:natt_port`; returns
/// the initiator's NAT-keepalives (which a gateway's IPsec stage takes,
/// never IKE).
fn pump_nat(p: &mut Pair, natt_port: u16) -> Vec<bitsgw_ike::Transmit> {
    let nat = |port| SocketAddr::new(NAT.parse().unwrap(), port);
    let mut keepalives = Vec::new();
    loop {
        let mut moved = false;
        while let Some(t) = p.i.poll_transmit() {
            moved = true;
            if t.is_nat_keepalive() {
                keepalives.push(t);
                continue;
            }
            let from = match t.local.port() {
                500 => nat(NAT_IKE_PORT),
                _ => nat(natt_port),
            };
            p.r.handle_datagram(p.now, from, t.remote, &t.contents);
        }
        while let Some(t) = p.r.poll_transmit() {
            moved = true;
            assert_eq!(t.remote.ip(), nat(0).ip(), "{t:?}");
            let port = if t.remote.port() == NAT_IKE_PORT {
                500
            } else {
                4500
            };
            let to = SocketAddr::new(p.ia.ip(), port);
            p.i.handle_datagram(p.now, t.local, to, &t.contents);
        }
        if !moved {
            return keepalives;
        }
    }
}

/// The IKE SA and CHILD_SA through the NAT of [`pump_nat`]; both
/// CHILD_SAs UDP-encapsulated.
fn establish_behind_nat(p: &mut Pair, natt_port: u16) -> (ChildSaEstablished, ChildSaEstablished) {
    p.initiate();
    assert!(pump_nat(p, natt_port).is_empty());
    let (ci, cr) = (child(&events(&mut p.i)), child(&events(&mut p.r)));
    assert!(ci.udp_encapsulation && cr.udp_encapsulation);
    assert_eq!(
        (ci.local, ci.remote),
        (
            "192.0.2.1:4500".parse().unwrap(),
            "198.51.100.1:4500".parse().unwrap()
        )
    );
    let natt = SocketAddr::new(NAT.parse().unwrap(), natt_port);
    assert_eq!(
        (cr.local, cr.remote),
        ("198.51.100.1:4500".parse().unwrap(), natt)
    );
    (ci, cr)
}

#[test]
fn only_the_side_behind_a_nat_sends_keepalives() {
    // RFC 3948 2.3: a keepalive every interval from behind the NAT, from
    // port 4500 to the peer's 4500.
    let every = Duration::from_secs(20);
    let (mut i, mut r) = (peer(true), peer(false));
    i.nat_keepalive = Some(every);
    r.nat_keepalive = Some(every);
    let mut p = Pair::new(i, r);
    establish_behind_nat(&mut p, 4322);
    let start = p.now;
    assert_eq!(p.i.poll_timeout(), Some(start.saturating_add(every)));
    assert_eq!(
        p.r.poll_timeout(),
        Some(start.saturating_add(Duration::from_secs(1200)))
    );
    for n in 1..=3u32 {
        p.now = start.saturating_add(every * n);
        p.i.handle_timeout(p.now);
        p.r.handle_timeout(p.now);
        let sent = pump_nat(&mut p, 4322);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].contents, bitsgw_ike::NAT_KEEPALIVE);
        assert_eq!(
            (sent[0].local, sent[0].remote),
            (
                "192.0.2.1:4500".parse().unwrap(),
                "198.51.100.1:4500".parse().unwrap()
            )
        );
    }
    assert_eq!(p.i.counters().nat_keepalives_sent, 3);
    assert_eq!(p.r.counters().nat_keepalives_sent, 0);
    // Without a NAT, none.
    let (mut i, mut r) = (peer(true), peer(false));
    i.nat_keepalive = Some(every);
    r.nat_keepalive = Some(every);
    let mut p = Pair::new(i, r);
    establish(&mut p);
    p.now = p.now.saturating_add(every);
    p.i.handle_timeout(p.now);
    assert!(p.i.poll_transmit().is_none());
    assert_eq!(p.i.counters().nat_keepalives_sent, 0);
}

#[test]
fn the_public_side_follows_a_new_nat_mapping_the_side_behind_it_does_not() {
    let mut p = Pair::new(peer(true), peer(false));
    let (ci, _) = establish_behind_nat(&mut p, 4322);
    // The NAT forgot the mapping and makes a new one: the responder,
    // not behind a NAT, follows the authentic request (RFC 7296 2.23),
    // says so, and the CHILD_SA the rekey makes is encapsulated to it.
    p.i.rekey_child(p.now, ci.ike, ci.inbound_spi).unwrap();
    assert!(pump_nat(&mut p, 4999).is_empty());
    let moved = SocketAddr::new(NAT.parse().unwrap(), 4999);
    let er = events(&mut p.r);
    assert!(
        er.iter().any(|e| matches!(
            e,
            Event::IkeSaMoved { remote, local, .. }
                if *remote == moved && *local == "198.51.100.1:4500".parse().unwrap()
        )),
        "{er:?}"
    );
    let cr = child(&er);
    assert!(cr.udp_encapsulation);
    assert_eq!(cr.remote, moved);
    let ci = child(&events(&mut p.i));
    assert!(ci.udp_encapsulation);
    assert_eq!(ci.remote, "198.51.100.1:4500".parse().unwrap());
    // The initiator, behind the NAT, does not follow an authentic request
    // from elsewhere: it answers where its IKE SA runs.
    p.r.rekey_child(p.now, cr.ike, cr.inbound_spi).unwrap();
    let t = p.r.poll_transmit().unwrap();
    assert_eq!(t.remote, moved);
    let elsewhere: SocketAddr = "198.51.100.7:4600".parse().unwrap();
    p.i.handle_datagram(
        p.now,
        elsewhere,
        "192.0.2.1:4500".parse().unwrap(),
        &t.contents,
    );
    let answer = p.i.poll_transmit().unwrap();
    assert_eq!(answer.remote, "198.51.100.1:4500".parse().unwrap());
    let ei = events(&mut p.i);
    assert!(
        !ei.iter().any(|e| matches!(e, Event::IkeSaMoved { .. })),
        "{ei:?}"
    );
    assert!(child(&ei).udp_encapsulation);
}

#[test]
fn once_on_4500_the_ike_sa_stays_there() {
    let mut p = Pair::new(peer(true), peer(false));
    let (ci, _) = establish_behind_nat(&mut p, 4322);
    // An authentic new request that reached the responder's port 500:
    // answered, but the IKE SA and its ESP stay on 4500.
    p.i.rekey_child(p.now, ci.ike, ci.inbound_spi).unwrap();
    let request = p.i.poll_transmit().unwrap();
    let nat_ike = SocketAddr::new(NAT.parse().unwrap(), NAT_IKE_PORT);
    p.r.handle_datagram(p.now, nat_ike, p.ra, &request.contents);
    let answer = p.r.poll_transmit().unwrap();
    let natt = SocketAddr::new(NAT.parse().unwrap(), 4322);
    assert_eq!(
        (answer.local, answer.remote),
        ("198.51.100.1:4500".parse().unwrap(), natt)
    );
    let er = events(&mut p.r);
    assert!(
        !er.iter().any(|e| matches!(e, Event::IkeSaMoved { .. })),
        "{er:?}"
    );
    let cr = child(&er);
    assert_eq!(
        (cr.local, cr.remote),
        ("198.51.100.1:4500".parse().unwrap(), natt)
    );
}

#[test]
fn an_answer_lost_with_the_nats_mapping_reaches_the_retransmission() {
    let mut p = Pair::new(peer(true), peer(false));
    let (ci, _) = establish_behind_nat(&mut p, 4322);
    let nat = |port| SocketAddr::new(NAT.parse().unwrap(), port);
    // A request through the NAT; its answer is lost, and the NAT's
    // mapping with it.
    p.i.rekey_child(p.now, ci.ike, ci.inbound_spi).unwrap();
    let request = p.i.poll_transmit().unwrap();
    p.r.handle_datagram(p.now, nat(4322), request.remote, &request.contents);
    let lost = p.r.poll_transmit().unwrap();
    assert_eq!(lost.remote, nat(4322));
    events(&mut p.r);
    // The retransmission comes through a new mapping: RFC 7296 2.11, the
    // cached answer goes there, though the IKE SA stays (a replayed
    // request must not move it, 2.23).
    p.now = p.now.saturating_add(Duration::from_secs(1));
    p.i.handle_timeout(p.now);
    let again = p.i.poll_transmit().unwrap();
    assert_eq!(again.contents, request.contents);
    p.r.handle_datagram(p.now, nat(4999), again.remote, &again.contents);
    let answer = p.r.poll_transmit().unwrap();
    assert_eq!(answer.remote, nat(4999));
    assert_eq!(answer.contents, lost.contents);
    assert_eq!(p.r.counters().responses_resent, 1);
    assert!(!events(&mut p.r)
        .iter()
        .any(|e| matches!(e, Event::IkeSaMoved { .. })));
    p.i.handle_datagram(p.now, answer.local, request.local, &answer.contents);
    assert!(child(&events(&mut p.i)).udp_encapsulation);
    // The initiator's next request, new, moves it.
    assert!(pump_nat(&mut p, 4999).is_empty());
    let er = events(&mut p.r);
    assert!(
        er.iter()
            .any(|e| matches!(e, Event::IkeSaMoved { remote, .. } if *remote == nat(4999))),
        "{er:?}"
    );
}

#[test]
fn wrong_psk_is_refused_with_authentication_failed() {
    let mut r = peer(false);
    r.auth = Authentication::Psk(Secret::new(b"another-psk-of-enough-length".to_vec()));
    let mut p = Pair::new(peer(true), r);
    p.initiate();
    p.pump();
    assert_eq!(
        down(&events(&mut p.i)),
        DownReason::PeerNotify(NotifyType::AuthenticationFailed)
    );
    assert!(
        events(&mut p.r).is_empty(),
        "the responder never announced it"
    );
    assert_eq!(p.r.counters().sent(NotifyType::AuthenticationFailed), 1);
    assert_eq!(p.i.counters().received(NotifyType::AuthenticationFailed), 1);
    assert_eq!(p.i.ike_sa_count(), 0);
    // The responder keeps its answer for retransmissions until the
    // half-open timeout, then nothing.
    assert_eq!(p.r.ike_sa_count(), 1);
    assert_eq!(p.r.half_open_count(), 1);
    run_down(&mut p.r);
    assert_eq!(p.r.ike_sa_count(), 0);
    assert!(events(&mut p.r).is_empty());
}

#[test]
fn a_retransmitted_refused_ike_auth_gets_the_same_refusal() {
    let mut r = peer(false);
    r.auth = Authentication::Psk(Secret::new(b"another-psk-of-enough-length".to_vec()));
    let mut p = Pair::new(peer(true), r);
    p.initiate();
    let init = p.i.poll_transmit().unwrap();
    p.r.handle_datagram(p.now, p.ia, p.ra, &init.contents);
    let resp = p.r.poll_transmit().unwrap();
    p.i.handle_datagram(p.now, p.ra, p.ia, &resp.contents);
    let auth = p.i.poll_transmit().unwrap();
    p.r.handle_datagram(p.now, p.ia, p.ra, &auth.contents);
    let refusal = p.r.poll_transmit().unwrap();
    // The refusal is lost; the initiator retransmits.
    p.r.handle_datagram(p.now, p.ia, p.ra, &auth.contents);
    assert_eq!(p.r.poll_transmit().unwrap().contents, refusal.contents);
    assert_eq!(p.r.counters().responses_resent, 1);
    p.i.handle_datagram(p.now, p.ra, p.ia, &refusal.contents);
    assert_eq!(
        down(&events(&mut p.i)),
        DownReason::PeerNotify(NotifyType::AuthenticationFailed)
    );
}

#[test]
fn wrong_identity_is_refused() {
    let mut r = peer(false);
    r.remote_id = Identity::Fqdn("c.example".into());
    let mut p = Pair::new(peer(true), r);
    p.initiate();
    p.pump();
    assert_eq!(
        down(&events(&mut p.i)),
        DownReason::PeerNotify(NotifyType::AuthenticationFailed)
    );
}

#[test]
fn no_common_proposal_is_refused_with_no_proposal_chosen() {
    let mut r = peer(false);
    r.ike_proposals = vec![IkeProposal {
        encryption: vec![Encryption::AES256_CBC],
        integrity: vec![Integrity::HmacSha256_128],
        prf: vec![Prf::HmacSha256],
        groups: vec![DhGroup::Ecp256],
    }];
    let mut p = Pair::new(peer(true), r);
    p.initiate();
    assert_eq!(p.pump(), 2);
    assert_eq!(
        down(&events(&mut p.i)),
        DownReason::PeerNotify(NotifyType::NoProposalChosen)
    );
    assert_eq!(p.r.counters().sent(NotifyType::NoProposalChosen), 1);
    assert_eq!(p.r.ike_sa_count(), 0, "nothing kept for a refusal");
}

#[test]
fn no_common_esp_proposal_fails_the_child_sa_only() {
    let mut r = peer(false);
    r.esp_proposals = vec![EspProposal {
        encryption: vec![Encryption::AES256_GCM16],
        integrity: vec![],
        groups: vec![],
    }];
    let mut p = Pair::new(peer(true), r);
    p.initiate();
    p.pump();
    let ei = events(&mut p.i);
    assert!(matches!(ei[0], Event::IkeSaUp { .. }));
    assert!(matches!(
        ei[1],
        Event::ChildSaFailed {
            notify: NotifyType::NoProposalChosen,
            ..
        }
    ));
    assert_eq!(p.i.ike_sa_count(), 1);
}

#[test]
fn invalid_ke_payload_makes_the_initiator_retry_with_the_asked_group() {
    let mut i = peer(true);
    i.ike_proposals = vec![gcm(vec![DhGroup::Ecp256, DhGroup::Curve25519])];
    let mut r = peer(false);
    r.ike_proposals = vec![gcm(vec![DhGroup::Curve25519])];
    let mut p = Pair::new(i, r);
    p.initiate();
    assert_eq!(p.pump(), 6, "INIT refused, INIT again, AUTH");
    let ei = events(&mut p.i);
    match &ei[0] {
        Event::IkeSaUp { suite, .. } => assert_eq!(suite.group, DhGroup::Curve25519),
        e => panic!("{e:?}"),
    }
    child(&ei);
    assert_eq!(p.r.counters().sent(NotifyType::InvalidKePayload), 1);
    assert_eq!(p.i.counters().received(NotifyType::InvalidKePayload), 1);
    assert_eq!(p.i.counters().requests_sent.ike_sa_init, 2);
}

#[test]
fn invalid_ke_payload_for_a_group_not_offered_ends_it() {
    let mut r = peer(false);
    r.ike_proposals = vec![gcm(vec![DhGroup::Curve25519, DhGroup::Ecp256])];
    let mut p = Pair::new(peer(true), r);
    // The responder's config accepts 19, so it will not ask; craft the
    // case from the other side: an initiator offering only 31 to a
    // responder wanting 19 gets NO_PROPOSAL_CHOSEN instead.
    let mut i2 = peer(true);
    i2.ike_proposals = vec![gcm(vec![DhGroup::Curve25519])];
    let mut r2 = peer(false);
    r2.ike_proposals = vec![gcm(vec![DhGroup::Ecp256])];
    let mut q = Pair::new(i2, r2);
    q.initiate();
    q.pump();
    assert_eq!(
        down(&events(&mut q.i)),
        DownReason::PeerNotify(NotifyType::NoProposalChosen)
    );
    // And the group of the KE payload is taken when acceptable.
    establish(&mut p);
}

#[test]
fn cookie_round_trip_under_load() {
    let mut r = config(peer(false));
    r.cookie_threshold = 0;
    let mut p = Pair::with(config(peer(true)), r);
    establish(&mut p);
    assert_eq!(p.r.counters().sent(NotifyType::Cookie), 1);
    assert_eq!(p.i.counters().sent(NotifyType::Cookie), 1);
    assert_eq!(p.i.counters().requests_sent.ike_sa_init, 2);
}

#[test]
fn a_wrong_cookie_gets_a_new_cookie_and_no_state() {
    let mut r = config(peer(false));
    r.cookie_threshold = 0;
    let mut p = Pair::with(config(peer(true)), r);
    p.initiate();
    let first = p.i.poll_transmit().unwrap();
    // From another address the cookie does not verify.
    let other: SocketAddr = "192.0.2.99:500".parse().unwrap();
    p.r.handle_datagram(p.now, p.ia, p.ra, &first.contents);
    let c = p.r.poll_transmit().unwrap();
    p.i.handle_datagram(p.now, p.ra, p.ia, &c.contents);
    let with_cookie = p.i.poll_transmit().unwrap();
    p.r.handle_datagram(p.now, other, p.ra, &with_cookie.contents);
    assert_eq!(p.r.ike_sa_count(), 0);
    assert_eq!(p.r.counters().sent(NotifyType::Cookie), 2);
}

#[test]
fn half_open_limit_bounds_the_responder() {
    let mut r = config(peer(false));
    r.max_half_open = 3;
    let mut rsp = Endpoint::new(r).unwrap();
    let ra: SocketAddr = "198.51.100.1:500".parse().unwrap();
    for n in 0..10u8 {
        let mut i = Endpoint::new(config(peer(true))).unwrap();
        let ia: SocketAddr = format!("192.0.2.{}:500", n + 1).parse().unwrap();
        i.initiate(Timestamp::ZERO, ia, ra).unwrap();
        let t = i.poll_transmit().unwrap();
        rsp.handle_datagram(Timestamp::ZERO, ia, ra, &t.contents);
    }
    assert_eq!(rsp.half_open_count(), 3);
    assert_eq!(rsp.counters().dropped(DropReason::HalfOpenLimit), 7);
    // Abandoned exchanges leave nothing behind after their timeout.
    let deadline = rsp.poll_timeout().unwrap();
    assert_eq!(deadline, Timestamp::from_secs(30));
    rsp.handle_timeout(deadline);
    assert_eq!(rsp.ike_sa_count(), 0);
    assert_eq!(rsp.counters().half_open_expired, 3);
    assert_eq!(rsp.poll_timeout(), None);
}

#[test]
fn retransmits_with_backoff_then_gives_up() {
    let mut i = Endpoint::new(config(peer(true))).unwrap();
    let (ia, ra): (SocketAddr, SocketAddr) = (
        "192.0.2.1:500".parse().unwrap(),
        "198.51.100.1:500".parse().unwrap(),
    );
    let t0 = Timestamp::from_secs(100);
    i.initiate(t0, ia, ra).unwrap();
    let first = i.poll_transmit().unwrap();
    // Default: 1 s, doubling, at most 16 s between sends, 5 retransmissions.
    let mut expect = t0;
    for (n, wait) in [1u64, 2, 4, 8, 16].iter().enumerate() {
        expect = expect.saturating_add(Duration::from_secs(*wait));
        assert_eq!(i.poll_timeout(), Some(expect), "retransmission {n}");
        // Nothing happens a moment early.
        i.handle_timeout(Timestamp(expect.0 - 1));
        assert!(i.poll_transmit().is_none());
        i.handle_timeout(expect);
        assert_eq!(i.poll_transmit().unwrap().contents, first.contents);
        assert_eq!(i.counters().retransmissions, n as u64 + 1);
    }
    expect = expect.saturating_add(Duration::from_secs(16));
    assert_eq!(i.poll_timeout(), Some(expect));
    i.handle_timeout(expect);
    assert!(i.poll_transmit().is_none());
    assert_eq!(down(&events(&mut i)), DownReason::Timeout);
    assert_eq!(i.ike_sa_count(), 0);
    assert_eq!(i.poll_timeout(), None);
}

#[test]
fn retransmitted_requests_get_the_cached_response() {
    let mut p = Pair::new(peer(true), peer(false));
    p.initiate();
    let init = p.i.poll_transmit().unwrap();
    p.r.handle_datagram(p.now, p.ia, p.ra, &init.contents);
    let resp1 = p.r.poll_transmit().unwrap();
    p.r.handle_datagram(p.now, p.ia, p.ra, &init.contents);
    let resp2 = p.r.poll_transmit().unwrap();
    assert_eq!(resp1.contents, resp2.contents);
    assert_eq!(p.r.ike_sa_count(), 1);
    p.i.handle_datagram(p.now, p.ra, p.ia, &resp1.contents);
    // The second copy of the response is no longer awaited.
    p.i.handle_datagram(p.now, p.ra, p.ia, &resp2.contents);
    assert_eq!(p.i.counters().dropped(DropReason::InvalidMessageId), 1);
    let auth = p.i.poll_transmit().unwrap();
    p.r.handle_datagram(p.now, p.ia, p.ra, &auth.contents);
    let a1 = p.r.poll_transmit().unwrap();
    p.r.handle_datagram(p.now, p.ia, p.ra, &auth.contents);
    let a2 = p.r.poll_transmit().unwrap();
    assert_eq!(a1.contents, a2.contents);
    assert_eq!(p.r.counters().responses_resent, 2);
    assert_eq!(p.r.counters().requests_received.ike_auth, 1);
    let er = events(&mut p.r);
    assert_eq!(
        er.iter()
            .filter(|e| matches!(e, Event::ChildSaEstablished(_)))
            .count(),
        1
    );
    p.i.handle_datagram(p.now, p.ra, p.ia, &a1.contents);
    child(&events(&mut p.i));
}

#[test]
fn delete_child_and_ike_sa() {
    let mut p = Pair::new(peer(true), peer(false));
    let (ci, cr) = establish(&mut p);
    p.i.delete_child(p.now, ci.ike, ci.inbound_spi).unwrap();
    p.pump();
    let deleted = |evs: Vec<Event>| {
        evs.into_iter()
            .filter_map(|e| match e {
                Event::ChildSaDeleted {
                    inbound_spi,
                    outbound_spi,
                    ..
                } => Some((inbound_spi, outbound_spi)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        deleted(events(&mut p.i)),
        vec![(ci.inbound_spi, ci.outbound_spi)]
    );
    assert_eq!(
        deleted(events(&mut p.r)),
        vec![(cr.inbound_spi, cr.outbound_spi)]
    );
    assert_eq!(p.i.counters().requests_sent.informational, 1);
    assert_eq!(p.r.counters().responses_sent.informational, 1);
    p.i.delete_ike(p.now, ci.ike).unwrap();
    p.pump();
    assert_eq!(down(&events(&mut p.i)), DownReason::DeletedLocally);
    assert_eq!(down(&events(&mut p.r)), DownReason::DeletedByPeer);
    assert_eq!(p.i.ike_sa_count() + p.r.ike_sa_count(), 0);
}

#[test]
fn responder_deletes_the_ike_sa_and_its_children() {
    let mut p = Pair::new(peer(true), peer(false));
    let (ci, cr) = establish(&mut p);
    p.r.delete_ike(p.now, cr.ike).unwrap();
    p.pump();
    let ei = events(&mut p.i);
    assert!(ei.contains(&Event::ChildSaDeleted {
        ike: ci.ike,
        name: "site".into(),
        child: "net".into(),
        inbound_spi: ci.inbound_spi,
        outbound_spi: ci.outbound_spi
    }));
    assert_eq!(down(&ei), DownReason::DeletedByPeer);
    assert_eq!(down(&events(&mut p.r)), DownReason::DeletedLocally);
}

#[test]
fn liveness_checks_and_a_dead_peer() {
    let mut i = peer(true);
    i.liveness = Some(Duration::from_secs(10));
    let mut p = Pair::new(i, peer(false));
    establish(&mut p);
    let due = p.now.saturating_add(Duration::from_secs(10));
    assert_eq!(p.i.poll_timeout(), Some(due));
    p.now = due;
    p.i.handle_timeout(p.now);
    assert_eq!(p.pump(), 2, "an empty INFORMATIONAL and its answer");
    assert_eq!(p.i.counters().requests_sent.informational, 1);
    assert_eq!(p.r.counters().responses_sent.informational, 1);
    assert!(events(&mut p.i).is_empty());
    // The peer goes silent: the next check is retransmitted, then given up.
    p.now = p.now.saturating_add(Duration::from_secs(10));
    p.i.handle_timeout(p.now);
    while let Some(t) = p.i.poll_timeout() {
        p.now = t;
        p.i.handle_timeout(t);
        while p.i.poll_transmit().is_some() {}
    }
    let ei = events(&mut p.i);
    assert!(matches!(ei[0], Event::ChildSaDeleted { .. }));
    assert_eq!(down(&ei), DownReason::Timeout);
}

#[test]
fn selectors_are_narrowed_or_refused() {
    let mut i = peer(true);
    i.children[0].local_ts = vec![ts("192.0.2.0/23")];
    i.children[0].remote_ts = vec![ts("198.51.100.0/24"), ts("203.0.113.0/24")];
    let mut p = Pair::new(i, peer(false));
    let (ci, _) = establish(&mut p);
    assert_eq!(ci.local_ts, vec![ts("192.0.2.0/24")]);
    assert_eq!(ci.remote_ts, vec![ts("198.51.100.0/24")]);

    let mut i = peer(true);
    i.children[0].remote_ts = vec![ts("203.0.113.0/24")];
    let mut p = Pair::new(i, peer(false));
    p.initiate();
    p.pump();
    let ei = events(&mut p.i);
    assert!(
        ei.iter().any(|e| matches!(
            e,
            Event::ChildSaFailed {
                notify: NotifyType::TsUnacceptable,
                ..
            }
        )),
        "{ei:?}"
    );
    assert_eq!(p.r.counters().sent(NotifyType::TsUnacceptable), 1);
}

#[test]
fn transport_mode_when_both_want_it() {
    let (mut i, mut r) = (peer(true), peer(false));
    i.children[0].mode = Mode::Transport;
    r.children[0].mode = Mode::Transport;
    let mut p = Pair::new(i, r);
    let (ci, cr) = establish(&mut p);
    assert_eq!((ci.mode, cr.mode), (Mode::Transport, Mode::Transport));
    assert_eq!(p.i.counters().received(NotifyType::UseTransportMode), 1);

    // A responder configured for tunnel mode answers in tunnel mode; the
    // initiator, configured for transport, refuses it and deletes it.
    let mut i = peer(true);
    i.children[0].mode = Mode::Transport;
    let mut p = Pair::new(i, peer(false));
    p.initiate();
    p.pump();
    let ei = events(&mut p.i);
    assert!(ei.iter().any(|e| matches!(
        e,
        Event::ChildSaFailed {
            notify: NotifyType::NoProposalChosen,
            ..
        }
    )));
    let er = events(&mut p.r);
    assert!(
        er.iter().any(|e| matches!(e, Event::ChildSaDeleted { .. })),
        "{er:?}"
    );
}

#[test]
fn initial_contact_replaces_the_old_ike_sa() {
    let mut p = Pair::new(peer(true), peer(false));
    let (_, cr) = establish(&mut p);
    // The initiator restarts and connects again.
    p.i = Endpoint::new(config(peer(true))).unwrap();
    p.initiate();
    p.pump();
    let er = events(&mut p.r);
    assert!(er.contains(&Event::ChildSaDeleted {
        ike: cr.ike,
        name: "site".into(),
        child: "net".into(),
        inbound_spi: cr.inbound_spi,
        outbound_spi: cr.outbound_spi
    }));
    assert!(er.contains(&Event::IkeSaDown {
        ike: cr.ike,
        reason: DownReason::InitialContact
    }));
    assert_eq!(p.r.ike_sa_count(), 1);
}

#[test]
fn truncated_and_garbage_datagrams_are_counted_and_harmless() {
    let mut p = Pair::new(peer(true), peer(false));
    p.initiate();
    let init = p.i.poll_transmit().unwrap();
    for cut in 0..init.contents.len() {
        p.r.handle_datagram(p.now, p.ia, p.ra, &init.contents[..cut]);
    }
    assert_eq!(
        p.r.counters().dropped(DropReason::Malformed),
        init.contents.len() as u64
    );
    assert_eq!(p.r.ike_sa_count(), 0);
    p.r.handle_datagram(p.now, p.ia, p.ra, &init.contents);
    let resp = p.r.poll_transmit().unwrap();
    // Flipped bits in the response never crash the initiator.
    for at in 0..resp.contents.len() {
        let mut bad = resp.contents.clone();
        bad[at] ^= 0x40;
        let mut probe = Endpoint::new(config(peer(true))).unwrap();
        probe.handle_datagram(p.now, p.ra, p.ia, &bad);
        assert_eq!(probe.counters().datagrams_received, 1);
    }
    p.i.handle_datagram(p.now, p.ra, p.ia, &resp.contents);
    let auth = p.i.poll_transmit().unwrap();
    // A tampered IKE_AUTH fails its ICV and is dropped silently.
    let mut bad = auth.contents.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    p.r.handle_datagram(p.now, p.ia, p.ra, &bad);
    assert_eq!(p.r.counters().dropped(DropReason::IntegrityCheckFailed), 1);
    assert!(p.r.poll_transmit().is_none());
    // The genuine one still completes the exchange.
    p.r.handle_datagram(p.now, p.ia, p.ra, &auth.contents);
    p.pump();
    child(&events(&mut p.i));
    // Unknown SPIs.
    let mut stray = auth.contents.clone();
    stray[0] ^= 0xff;
    p.r.handle_datagram(p.now, p.ia, p.ra, &stray);
    assert_eq!(p.r.counters().dropped(DropReason::UnknownSpi), 1);
}

#[test]
fn replayed_and_reordered_messages_are_counted_and_answered_as_rfc_7296_says() {
    // RFC 7296 2.1 and 2.3 (a window of one): a retransmitted request gets
    // the cached response; an older request, a request from beyond the
    // window and a response to nothing outstanding are dropped, counted,
    // and change nothing.
    let mut p = Pair::new(peer(true), peer(false));
    let (ci, _) = establish(&mut p);
    let exchange = |p: &mut Pair| {
        let req = p.i.poll_transmit().unwrap().contents;
        p.r.handle_datagram(p.now, p.ia, p.ra, &req);
        let resp = p.r.poll_transmit().unwrap().contents;
        p.i.handle_datagram(p.now, p.ra, p.ia, &resp);
        assert!(p.i.poll_transmit().is_none() && p.r.poll_transmit().is_none());
        (req, resp)
    };
    p.i.create_child(p.now, ci.ike, "net").unwrap();
    let (req2, resp2) = exchange(&mut p);
    p.i.delete_child(p.now, ci.ike, ci.inbound_spi).unwrap();
    let (req3, resp3) = exchange(&mut p);
    let (ei, er) = (events(&mut p.i), events(&mut p.r));
    let invalid = |e: &Endpoint| e.counters().dropped(DropReason::InvalidMessageId);

    // The last request again: its response again, byte for byte.
    p.r.handle_datagram(p.now, p.ia, p.ra, &req3);
    assert_eq!(p.r.poll_transmit().unwrap().contents, resp3);
    assert_eq!(p.r.counters().responses_resent, 1);
    // An older one: dropped.
    p.r.handle_datagram(p.now, p.ia, p.ra, &req2);
    assert!(p.r.poll_transmit().is_none());
    assert_eq!(invalid(&p.r), 1);
    // One from beyond the window (message ID 7 where 4 is next): dropped
    // before its ICV is even checked.
    let mut ahead = req3.clone();
    ahead[20..24].copy_from_slice(&7u32.to_be_bytes());
    p.r.handle_datagram(p.now, p.ia, p.ra, &ahead);
    assert!(p.r.poll_transmit().is_none());
    assert_eq!(invalid(&p.r), 2);
    assert_eq!(p.r.counters().dropped(DropReason::IntegrityCheckFailed), 0);

    // A response replayed with nothing outstanding: dropped.
    p.i.handle_datagram(p.now, p.ra, p.ia, &resp3);
    assert_eq!(invalid(&p.i), 1);
    // An old response while a newer request is outstanding: dropped, and
    // the real response still completes the exchange.
    p.i.delete_ike(p.now, ci.ike).unwrap();
    let req4 = p.i.poll_transmit().unwrap().contents;
    p.i.handle_datagram(p.now, p.ra, p.ia, &resp2);
    assert_eq!(invalid(&p.i), 2);
    assert!(events(&mut p.i)
        .iter()
        .all(|e| !matches!(e, Event::IkeSaDown { .. })));
    p.r.handle_datagram(p.now, p.ia, p.ra, &req4);
    let resp4 = p.r.poll_transmit().unwrap().contents;
    p.i.handle_datagram(p.now, p.ra, p.ia, &resp4);
    assert_eq!(down(&events(&mut p.i)), DownReason::DeletedLocally);
    assert_eq!(down(&events(&mut p.r)), DownReason::DeletedByPeer);

    // Nothing but the genuine exchanges changed anything: one CHILD_SA
    // made and one deleted on each side.
    for evs in [&ei, &er] {
        let (up, gone) = child_changes(evs);
        assert_eq!((up.len(), gone.len()), (1, 1), "{evs:?}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Random datagrams, and random changes to a genuine IKE_SA_INIT
    /// request, never panic and are all counted.
    #[test]
    fn random_bytes_never_panic(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        flips in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 0..8),
    ) {
        let ia: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let ra: SocketAddr = "198.51.100.1:500".parse().unwrap();
        let mut r = Endpoint::new(config(peer(false))).unwrap();
        r.handle_datagram(Timestamp::ZERO, ia, ra, &data);
        let mut i = Endpoint::new(config(peer(true))).unwrap();
        i.initiate(Timestamp::ZERO, ia, ra).unwrap();
        let mut init = i.poll_transmit().unwrap().contents;
        for (at, x) in flips {
            let n = init.len();
            init[at % n] ^= x;
        }
        r.handle_datagram(Timestamp::ZERO, ia, ra, &init);
        i.handle_datagram(Timestamp::ZERO, ra, ia, &data);
        while let Some(t) = r.poll_transmit() {
            i.handle_datagram(Timestamp::ZERO, ra, ia, &t.contents);
        }
        proptest::prop_assert_eq!(r.counters().datagrams_received, 2);
        proptest::prop_assert!(i.counters().datagrams_received >= 1);
    }
}

/// The CHILD_SAs established and deleted in `events`, as (inbound,
/// outbound) SPIs.
fn child_changes(events: &[Event]) -> (Vec<ChildSaEstablished>, Vec<(u32, u32)>) {
    let mut up = Vec::new();
    let mut gone = Vec::new();
    for e in events {
        match e {
            Event::ChildSaEstablished(c) => up.push((**c).clone()),
            Event::ChildSaDeleted {
                inbound_spi,
                outbound_spi,
                ..
            } => gone.push((*inbound_spi, *outbound_spi)),
            _ => {}
        }
    }
    (up, gone)
}

/// After a rekey both sides hold one new CHILD_SA with matching SPIs and
/// keys, fresh ones, and the old one is gone on both.
fn check_rekeyed(
    p: &mut Pair,
    old: (&ChildSaEstablished, &ChildSaEstablished),
    i_started: bool,
) -> (ChildSaEstablished, ChildSaEstablished) {
    let (ei, er) = (events(&mut p.i), events(&mut p.r));
    let (ui, gi) = child_changes(&ei);
    let (ur, gr) = child_changes(&er);
    assert_eq!((ui.len(), ur.len()), (1, 1), "{ei:?}\n{er:?}");
    let (ni, nr) = (&ui[0], &ur[0]);
    assert_eq!(gi, vec![(old.0.inbound_spi, old.0.outbound_spi)]);
    assert_eq!(gr, vec![(old.1.inbound_spi, old.1.outbound_spi)]);
    assert_eq!(ni.rekeys, Some(old.0.inbound_spi));
    assert_eq!(nr.rekeys, Some(old.1.inbound_spi));
    assert_eq!(ni.exchange_initiator, i_started);
    assert_eq!(nr.exchange_initiator, !i_started);
    assert_eq!(
        (ni.inbound_spi, ni.outbound_spi),
        (nr.outbound_spi, nr.inbound_spi)
    );
    assert_eq!((&ni.inbound, &ni.outbound), (&nr.outbound, &nr.inbound));
    assert_ne!(ni.inbound, old.0.inbound);
    assert_ne!(ni.inbound_spi, old.0.inbound_spi);
    assert_eq!(ni.local_ts, old.0.local_ts);
    (ni.clone(), nr.clone())
}

#[test]
fn either_side_rekeys_a_child_sa() {
    let mut p = Pair::new(peer(true), peer(false));
    let (ci, cr) = establish(&mut p);
    p.i.rekey_child(p.now, ci.ike, ci.inbound_spi).unwrap();
    assert_eq!(
        p.pump(),
        4,
        "CREATE_CHILD_SA, then the Delete of the old one"
    );
    let (ci, cr) = check_rekeyed(&mut p, (&ci, &cr), true);
    assert_eq!(p.i.counters().requests_sent.create_child_sa, 1);
    assert_eq!(p.r.counters().received(NotifyType::RekeySa), 1);
    p.r.rekey_child(p.now, cr.ike, cr.inbound_spi).unwrap();
    p.pump();
    check_rekeyed(&mut p, (&ci, &cr), false);
}

#[test]
fn a_child_sa_is_rekeyed_when_its_lifetime_ends() {
    let mut i = peer(true);
    i.lifetimes.child = Duration::from_secs(60);
    let mut p = Pair::new(i, peer(false));
    let (ci, cr) = establish(&mut p);
    let due = p.now.saturating_add(Duration::from_secs(60));
    assert_eq!(p.i.poll_timeout(), Some(due));
    p.i.handle_timeout(Timestamp(due.0 - 1));
    assert!(p.i.poll_transmit().is_none());
    p.now = due;
    p.i.handle_timeout(p.now);
    p.pump();
    let (ni, _) = check_rekeyed(&mut p, (&ci, &cr), true);
    // The new one is rekeyed a lifetime later.
    assert_eq!(
        p.i.poll_timeout(),
        Some(p.now.saturating_add(Duration::from_secs(60)))
    );
    assert_ne!(ni.inbound_spi, 0);
}

/// Runs `e`'s timers up to `until`, dropping everything it sends (a peer
/// that stopped answering).
fn unanswered_until(e: &mut Endpoint, until: Timestamp) -> usize {
    let mut sent = 0;
    while let Some(t) = e.poll_timeout().filter(|t| *t <= until) {
        e.handle_timeout(t);
        sent += std::iter::from_fn(|| e.poll_transmit()).count();
    }
    sent
}

#[test]
fn a_child_sa_whose_rekey_goes_unanswered_is_deleted_at_its_hard_lifetime() {
    // RFC 4301 4.4.2.1: an SA is not used past its lifetime. The rekey at
    // 60 s gets no answer (retransmitted for 31 s); at 66 s, the hard
    // lifetime, the CHILD_SA is reported gone, so its SAs leave the stage.
    let mut i = peer(true);
    i.lifetimes.child = Duration::from_secs(60);
    let mut p = Pair::new(i, peer(false));
    let (ci, _) = establish(&mut p);
    let start = p.now;
    let hard = start.saturating_add(Duration::from_secs(66));
    let sent = unanswered_until(&mut p.i, Timestamp(hard.0 - 1));
    assert_eq!(sent, 3, "the rekey at 60 s, retransmitted at 61 and 63 s");
    assert!(child_changes(&events(&mut p.i)).1.is_empty());
    assert_eq!(p.i.counters().child_sas_expired, 0);
    assert_eq!(p.i.poll_timeout(), Some(hard));
    p.i.handle_timeout(hard);
    let gone = child_changes(&events(&mut p.i)).1;
    assert_eq!(gone, vec![(ci.inbound_spi, ci.outbound_spi)]);
    assert_eq!(p.i.counters().child_sas_expired, 1);
    // The IKE SA stays up; only the CHILD_SA went.
    assert_eq!(p.i.counters().ike_sas_expired, 0);
}

#[test]
fn an_ike_sa_whose_rekey_goes_unanswered_is_deleted_at_its_hard_lifetime() {
    let mut i = peer(true);
    i.lifetimes.ike = Duration::from_secs(100);
    let mut p = Pair::new(i, peer(false));
    let (ci, _) = establish(&mut p);
    let hard = p.now.saturating_add(Duration::from_secs(110));
    unanswered_until(&mut p.i, Timestamp(hard.0 - 1));
    assert!(events(&mut p.i).is_empty());
    p.i.handle_timeout(hard);
    let ev = events(&mut p.i);
    assert_eq!(
        child_changes(&ev).1,
        vec![(ci.inbound_spi, ci.outbound_spi)]
    );
    assert!(
        ev.iter().any(|e| matches!(
            e,
            Event::IkeSaDown {
                reason: DownReason::Expired,
                ..
            }
        )),
        "{ev:?}"
    );
    assert_eq!(p.i.counters().ike_sas_expired, 1);
    // Reported once: the end of the retransmissions of the rekey and of
    // the Delete adds no second IkeSaDown.
    unanswered_until(&mut p.i, hard.saturating_add(Duration::from_secs(600)));
    assert!(events(&mut p.i).is_empty());
}

#[test]
fn a_child_sa_rekeyed_in_time_is_not_expired() {
    let mut i = peer(true);
    i.lifetimes.child = Duration::from_secs(60);
    let mut p = Pair::new(i, peer(false));
    let (ci, cr) = establish(&mut p);
    p.now = p.now.saturating_add(Duration::from_secs(60));
    p.i.handle_timeout(p.now);
    p.pump();
    check_rekeyed(&mut p, (&ci, &cr), true);
    // Past the old one's hard lifetime: the new one is 6 s old.
    p.now = p.now.saturating_add(Duration::from_secs(7));
    if p.i.poll_timeout().is_some_and(|t| t <= p.now) {
        p.i.handle_timeout(p.now);
    }
    p.pump();
    assert!(child_changes(&events(&mut p.i)).1.is_empty());
    assert_eq!(p.i.counters().child_sas_expired, 0);
}

#[test]
fn simultaneous_rekeys_leave_one_child_sa() {
    // RFC 7296 2.8.1: both sides rekey at once; each answers the other,
    // and the CHILD_SA made with the lowest nonce is deleted by its maker.
    for _ in 0..8 {
        let mut p = Pair::new(peer(true), peer(false));
        let (ci, cr) = establish(&mut p);
        p.i.rekey_child(p.now, ci.ike, ci.inbound_spi).unwrap();
        p.r.rekey_child(p.now, cr.ike, cr.inbound_spi).unwrap();
        p.cross();
        p.pump();
        let (ei, er) = (events(&mut p.i), events(&mut p.r));
        let live = |evs: &[Event]| {
            let (up, gone) = child_changes(evs);
            let mut live: Vec<(u32, u32)> = vec![(0, 0)];
            live.clear();
            for c in up {
                live.push((c.inbound_spi, c.outbound_spi));
            }
            live.retain(|x| !gone.contains(x));
            (live, gone)
        };
        let (li, gi) = live(&ei);
        let (lr, gr) = live(&er);
        assert_eq!(li.len(), 1, "{ei:?}");
        assert_eq!(lr.len(), 1, "{er:?}");
        assert_eq!(li[0], (lr[0].1, lr[0].0));
        assert!(gi.contains(&(ci.inbound_spi, ci.outbound_spi)));
        assert!(gr.contains(&(cr.inbound_spi, cr.outbound_spi)));
        assert_eq!(
            p.i.counters().total_drops() + p.r.counters().total_drops(),
            0
        );
    }
}

#[test]
fn rekeying_a_child_sa_the_peer_deletes_gets_child_sa_not_found() {
    let mut p = Pair::new(peer(true), peer(false));
    let (ci, cr) = establish(&mut p);
    p.i.rekey_child(p.now, ci.ike, ci.inbound_spi).unwrap();
    p.r.delete_child(p.now, cr.ike, cr.inbound_spi).unwrap();
    p.cross();
    p.pump();
    let ei = events(&mut p.i);
    assert!(
        ei.contains(&Event::ChildSaFailed {
            ike: ci.ike,
            name: "site".into(),
            child: "net".into(),
            notify: NotifyType::ChildSaNotFound
        }),
        "{ei:?}"
    );
    assert_eq!(
        child_changes(&ei).1,
        vec![(ci.inbound_spi, ci.outbound_spi)]
    );
    assert_eq!(
        child_changes(&events(&mut p.r)).1,
        vec![(cr.inbound_spi, cr.outbound_spi)]
    );
    assert_eq!(p.r.counters().sent(NotifyType::ChildSaNotFound), 1);
}

fn rekeyed(events: &[Event]) -> Vec<(bitsgw_ike::IkeSaId, bitsgw_ike::IkeSaId, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaRekeyed {
                old,
                new,
                spi_i,
                spi_r,
            } => Some((*old, *new, *spi_i, *spi_r)),
            _ => None,
        })
        .collect()
}

#[test]
fn either_side_rekeys_the_ike_sa_and_its_child_sas_move() {
    let mut p = Pair::new(peer(true), peer(false));
    let (ci, cr) = establish(&mut p);
    p.i.rekey_ike(p.now, ci.ike).unwrap();
    assert_eq!(
        p.pump(),
        4,
        "CREATE_CHILD_SA, then the Delete of the old IKE SA"
    );
    let (ei, er) = (events(&mut p.i), events(&mut p.r));
    let (ri, rr) = (rekeyed(&ei), rekeyed(&er));
    assert_eq!((ri.len(), rr.len()), (1, 1), "{ei:?}\n{er:?}");
    assert_eq!((ri[0].0, rr[0].0), (ci.ike, cr.ike));
    assert_eq!((ri[0].2, ri[0].3), (rr[0].2, rr[0].3), "the same new SPIs");
    assert_ne!(ri[0].1, ci.ike);
    assert!(!ei
        .iter()
        .chain(&er)
        .any(|e| matches!(e, Event::IkeSaDown { .. } | Event::ChildSaDeleted { .. })));
    assert_eq!((p.i.ike_sa_count(), p.r.ike_sa_count()), (1, 1));
    let (new_i, new_r) = (ri[0].1, rr[0].1);
    // The CHILD_SA now belongs to the new IKE SA; the responder rekeys it
    // there, then the IKE SA again.
    let moved_i = ChildSaEstablished {
        ike: new_i,
        ..ci.clone()
    };
    let moved_r = ChildSaEstablished {
        ike: new_r,
        ..cr.clone()
    };
    p.r.rekey_child(p.now, new_r, cr.inbound_spi).unwrap();
    p.pump();
    let (ci2, cr2) = check_rekeyed(&mut p, (&moved_i, &moved_r), false);
    assert_eq!((ci2.ike, cr2.ike), (new_i, new_r));
    p.r.rekey_ike(p.now, new_r).unwrap();
    p.pump();
    let (ei, er) = (events(&mut p.i), events(&mut p.r));
    assert_eq!(rekeyed(&ei).len(), 1);
    assert_eq!(rekeyed(&er)[0].0, new_r);
    let newest_i = rekeyed(&ei)[0].1;
    p.i.delete_ike(p.now, newest_i).unwrap();
    p.pump();
    let (ei, er) = (events(&mut p.i), events(&mut p.r));
    assert_eq!(
        child_changes(&ei).1,
        vec![(ci2.inbound_spi, ci2.outbound_spi)]
    );
    assert_eq!(down(&ei), DownReason::DeletedLocally);
    assert_eq!(down(&er), DownReason::DeletedByPeer);
    assert_eq!(p.i.ike_sa_count() + p.r.ike_sa_count(), 0);
}

#[test]
fn the_ike_sa_is_rekeyed_when_its_lifetime_ends() {
    let mut i = peer(true);
    i.lifetimes.ike = Duration::from_secs(100);
    let mut p = Pair::new(i, peer(false));
    let (ci, _) = establish(&mut p);
    let due = p.now.saturating_add(Duration::from_secs(100));
    assert_eq!(p.i.poll_timeout(), Some(due));
    p.now = due;
    p.i.handle_timeout(p.now);
    p.pump();
    let r = rekeyed(&events(&mut p.i));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, ci.ike);
    assert_eq!(
        p.i.poll_timeout(),
        Some(p.now.saturating_add(Duration::from_secs(100)))
    );
}

#[test]
fn simultaneous_ike_sa_rekeys_leave_one_ike_sa() {
    // RFC 7296 2.8.2: both answer the other's rekey; the new IKE SA made
    // with the lowest nonce is deleted by its initiator, the old one by
    // the other's, and the CHILD_SAs end up on the survivor on both sides.
    for _ in 0..8 {
        let mut p = Pair::new(peer(true), peer(false));
        let (ci, cr) = establish(&mut p);
        p.i.rekey_ike(p.now, ci.ike).unwrap();
        p.r.rekey_ike(p.now, cr.ike).unwrap();
        p.cross();
        p.pump();
        let (ei, er) = (events(&mut p.i), events(&mut p.r));
        let (ri, rr) = (rekeyed(&ei), rekeyed(&er));
        assert_eq!((ri.len(), rr.len()), (1, 1), "{ei:?}\n{er:?}");
        assert_eq!((ri[0].2, ri[0].3), (rr[0].2, rr[0].3), "the same survivor");
        assert!(!ei
            .iter()
            .chain(&er)
            .any(|e| matches!(e, Event::IkeSaDown { .. } | Event::ChildSaDeleted { .. })));
        assert_eq!((p.i.ike_sa_count(), p.r.ike_sa_count()), (1, 1));
        assert_eq!(
            p.i.counters().total_drops() + p.r.counters().total_drops(),
            0
        );
        // The CHILD_SA lives on the survivor.
        let (new_i, new_r) = (ri[0].1, rr[0].1);
        p.i.delete_child(p.now, new_i, ci.inbound_spi).unwrap();
        p.pump();
        assert_eq!(
            child_changes(&events(&mut p.r)).1,
            vec![(cr.inbound_spi, cr.outbound_spi)]
        );
        assert!(p.r.delete_ike(p.now, new_r).is_ok());
    }
}

#[test]
fn an_ike_sa_rekey_meeting_a_delete_is_refused_with_temporary_failure() {
    let mut p = Pair::new(peer(true), peer(false));
    let (ci, cr) = establish(&mut p);
    p.i.rekey_ike(p.now, ci.ike).unwrap();
    p.r.delete_ike(p.now, cr.ike).unwrap();
    p.cross();
    p.pump();
    assert_eq!(p.r.counters().sent(NotifyType::TemporaryFailure), 1);
    assert_eq!(down(&events(&mut p.i)), DownReason::DeletedByPeer);
    assert_eq!(p.i.ike_sa_count() + p.r.ike_sa_count(), 0);
}

/// `msg` with one more payload of type `kind` at the end of its outer
/// chain.
fn append_payload(msg: &[u8], kind: u8, critical: bool) -> Vec<u8> {
    let mut out = msg.to_vec();
    let mut next_at = 16;
    let mut at = 28;
    while out[next_at] != 0 {
        next_at = at;
        at += usize::from(u16::from_be_bytes([out[at + 2], out[at + 3]]));
    }
    out[next_at] = kind;
    out.extend_from_slice(&[0, if critical { 0x80 } else { 0 }, 0, 6, 0xab, 0xcd]);
    let len = out.len() as u32;
    out[24..28].copy_from_slice(&len.to_be_bytes());
    out
}

#[test]
fn unknown_critical_payloads_are_refused_and_others_ignored() {
    let mut p = Pair::new(peer(true), peer(false));
    p.initiate();
    let init = p.i.poll_transmit().unwrap();
    // RFC 7296 2.5: a critical one is refused, naming its type; no state.
    let critical = append_payload(&init.contents, 99, true);
    p.r.handle_datagram(p.now, p.ia, p.ra, &critical);
    assert_eq!(p.r.ike_sa_count(), 0);
    let refusal = p.r.poll_transmit().unwrap();
    assert_eq!(
        p.r.counters().sent(NotifyType::UnsupportedCriticalPayload),
        1
    );
    p.i.handle_datagram(p.now, p.ra, p.ia, &refusal.contents);
    assert_eq!(
        down(&events(&mut p.i)),
        DownReason::PeerNotify(NotifyType::UnsupportedCriticalPayload)
    );
    // A non-critical one is skipped and the exchange goes on.
    let mut p = Pair::new(peer(true), peer(false));
    p.initiate();
    let init = p.i.poll_transmit().unwrap();
    let extra = append_payload(&init.contents, 99, false);
    p.r.handle_datagram(p.now, p.ia, p.ra, &extra);
    assert_eq!(p.r.ike_sa_count(), 1);
    assert_eq!(p.r.counters().total_drops(), 0);
}

fn with_pfs(mut c: PeerConfig, groups: Vec<DhGroup>) -> PeerConfig {
    c.esp_proposals[0].groups = groups;
    c
}

#[test]
fn child_sa_rekeys_with_pfs() {
    let g = vec![DhGroup::Curve25519];
    let mut p = Pair::new(with_pfs(peer(true), g.clone()), with_pfs(peer(false), g));
    let (ci, cr) = establish(&mut p);
    // IKE_AUTH has no KE payload: its CHILD_SA has no group of its own.
    assert_eq!(ci.suite.group, None);
    p.i.rekey_child(p.now, ci.ike, ci.inbound_spi).unwrap();
    p.pump();
    let (ni, nr) = check_rekeyed(&mut p, (&ci, &cr), true);
    assert_eq!(ni.suite.group, Some(DhGroup::Curve25519));
    assert_eq!(nr.suite.group, Some(DhGroup::Curve25519));
    p.r.rekey_child(p.now, nr.ike, nr.inbound_spi).unwrap();
    p.pump();
    let (ni2, _) = check_rekeyed(&mut p, (&ni, &nr), false);
    assert_eq!(ni2.suite.group, Some(DhGroup::Curve25519));
}

#[test]
fn pfs_disagreements_fail_the_rekey_and_keep_the_child_sa() {
    // The KE payload's group is not the responder's: INVALID_KE_PAYLOAD
    // asking for its own.
    let i = with_pfs(peer(true), vec![DhGroup::Ecp256, DhGroup::Curve25519]);
    let mut p = Pair::new(i, with_pfs(peer(false), vec![DhGroup::Curve25519]));
    let (ci, _) = establish(&mut p);
    p.i.rekey_child(p.now, ci.ike, ci.inbound_spi).unwrap();
    p.pump();
    let ei = events(&mut p.i);
    assert!(
        ei.contains(&Event::ChildSaFailed {
            ike: ci.ike,
            name: "site".into(),
            child: "net".into(),
            notify: NotifyType::InvalidKePayload
        }),
        "{ei:?}"
    );
    assert_eq!(child_changes(&ei), (vec![], vec![]));
    // PFS required by the responder, a rekey without it refused.
    let mut p = Pair::new(peer(true), with_pfs(peer(false), vec![DhGroup::Curve25519]));
    let (ci, _) = establish(&mut p);
    p.i.rekey_child(p.now, ci.ike, ci.inbound_spi).unwrap();
    p.pump();
    assert!(events(&mut p.i).contains(&Event::ChildSaFailed {
        ike: ci.ike,
        name: "site".into(),
        child: "net".into(),
        notify: NotifyType::NoProposalChosen
    }));
    assert_eq!(p.r.counters().sent(NotifyType::NoProposalChosen), 1);
}

#[test]
fn more_child_sas_on_one_ike_sa() {
    let (a, b) = (ts("192.0.2.0/25"), ts("198.51.100.128/25"));
    let (mut i, mut r) = (peer(true), peer(false));
    i.children.push(ChildConfig {
        name: "more".into(),
        local_ts: vec![a],
        remote_ts: vec![b],
        mode: Mode::Tunnel,
    });
    r.children.push(ChildConfig {
        name: "other".into(),
        local_ts: vec![ts("203.0.113.0/24")],
        remote_ts: vec![a],
        mode: Mode::Tunnel,
    });
    let mut p = Pair::new(i, r);
    let (ci, cr) = establish(&mut p);
    // The second child followed IKE_AUTH at once, in CREATE_CHILD_SA.
    assert_eq!(p.i.counters().requests_sent.create_child_sa, 1);
    p.i.create_child(p.now, ci.ike, "more").unwrap();
    assert_eq!(p.pump(), 2);
    let (ei, er) = (events(&mut p.i), events(&mut p.r));
    let (ui, gi) = child_changes(&ei);
    let (ur, gr) = child_changes(&er);
    assert!(gi.is_empty() && gr.is_empty(), "the first CHILD_SA stays");
    assert_eq!((ui.len(), ur.len()), (1, 1));
    let (ni, nr) = (&ui[0], &ur[0]);
    assert_eq!((ni.rekeys, nr.rekeys), (None, None));
    assert_eq!((&ni.local_ts, &ni.remote_ts), (&vec![a], &vec![b]));
    assert_eq!((&nr.local_ts, &nr.remote_ts), (&vec![b], &vec![a]));
    assert_eq!(
        (ni.inbound_spi, ni.outbound_spi),
        (nr.outbound_spi, nr.inbound_spi)
    );
    assert_eq!((&ni.inbound, &ni.outbound), (&nr.outbound, &nr.inbound));
    assert_ne!(ni.inbound_spi, ci.inbound_spi);
    // The responder asks for selectors outside the initiator's: refused.
    p.r.create_child(p.now, cr.ike, "other").unwrap();
    p.pump();
    assert_eq!(p.i.counters().sent(NotifyType::TsUnacceptable), 1);
    assert!(events(&mut p.r).contains(&Event::ChildSaFailed {
        ike: cr.ike,
        name: "site".into(),
        child: "other".into(),
        notify: NotifyType::TsUnacceptable
    }));
    assert_eq!(
        p.r.create_child(p.now, cr.ike, "nope"),
        Err(bitsgw_ike::IkeError::UnknownChild("nope".into()))
    );
}

#[test]
fn rekeys_start_up_to_the_jitter_early() {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let mut i = peer(true);
        i.lifetimes = Lifetimes {
            ike: Duration::from_secs(1000),
            child: Duration::from_secs(100),
            jitter: Duration::from_secs(20),
        };
        let mut p = Pair::new(i, peer(false));
        establish(&mut p);
        let due = p.i.poll_timeout().unwrap();
        let earliest = p.now.saturating_add(Duration::from_secs(80));
        let latest = p.now.saturating_add(Duration::from_secs(100));
        assert!(earliest <= due && due <= latest, "{due:?}");
        seen.insert(due);
    }
    assert!(seen.len() > 1, "the jitter is random");
}

#[test]
fn configuration_errors_name_the_field() {
    let mut c = peer(true);
    c.lifetimes.jitter = c.lifetimes.child;
    let e = Endpoint::new(config(c)).unwrap_err().to_string();
    assert_eq!(
        e,
        "peer site: lifetimes.jitter: not shorter than the IKE and CHILD_SA lifetimes"
    );
    let mut c = peer(true);
    c.esp_proposals[0].integrity = vec![Integrity::HmacSha256_128];
    let e = Endpoint::new(config(c)).unwrap_err().to_string();
    assert_eq!(
        e,
        "peer site: esp_proposals[0].integrity: an AEAD proposal takes no integrity transform"
    );
    let mut c = peer(true);
    c.auth = Authentication::Psk(Secret::new(b"short".to_vec()));
    let e = Endpoint::new(config(c)).unwrap_err().to_string();
    assert_eq!(e, "peer site: psk: shorter than 16 octets");
}

/// Drives `e` by its own deadlines, dropping what it sends, and checks
/// that each deadline handled moves the next one on (no busy loop) until
/// nothing is left.
fn run_down(e: &mut Endpoint) {
    for _ in 0..200 {
        let Some(t) = e.poll_timeout() else {
            return;
        };
        e.handle_timeout(t);
        while e.poll_transmit().is_some() {}
        assert!(
            e.poll_timeout().is_none_or(|next| next > t),
            "the deadline {t:?} was handled but stays"
        );
    }
    panic!("still busy after 200 deadlines");
}

#[test]
fn timers_always_make_progress() {
    // The responder checks liveness; its check is lost. Then the initiator
    // rekeys the IKE SA, and its Delete of the old one is lost: the old
    // one on the responder has both a request outstanding and its
    // expiry.
    let mut r = peer(false);
    r.liveness = Some(Duration::from_secs(10));
    let mut p = Pair::new(peer(true), r);
    let (ci, _) = establish(&mut p);
    p.now = p.now.saturating_add(Duration::from_secs(10));
    p.r.handle_timeout(p.now);
    assert!(p.r.poll_transmit().is_some(), "the lost liveness check");
    p.i.rekey_ike(p.now, ci.ike).unwrap();
    let req = p.i.poll_transmit().unwrap();
    p.r.handle_datagram(p.now, p.ia, p.ra, &req.contents);
    let resp = p.r.poll_transmit().unwrap();
    p.i.handle_datagram(p.now, p.ra, p.ia, &resp.contents);
    assert!(p.i.poll_transmit().is_some(), "the lost Delete");
    assert_eq!(p.r.ike_sa_count(), 2);
    run_down(&mut p.r);
    run_down(&mut p.i);
    assert_eq!(p.r.ike_sa_count() + p.i.ike_sa_count(), 0);
}
