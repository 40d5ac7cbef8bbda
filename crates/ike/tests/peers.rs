//! One responder endpoint serving several peers, told apart by the
//! identity each proves in IKE_AUTH: a home agent and its mobile nodes,
//! each authorized for its own home address only (RFC 4877 4.4).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitsgw_ike::certs::AuthFailure;
use bitsgw_ike::crypto::Secret;
use bitsgw_ike::suite::DhGroup;
use bitsgw_ike::wire::{NotifyType, TrafficSelector};
use bitsgw_ike::{
    Authentication, ChildConfig, DownReason, Endpoint, Event, Identity, IkeError, Mode, PeerConfig,
};

#[path = "common/pair.rs"]
mod pair;

use pair::*;

const HOME_AGENT: &str = "2001:db8:1::1/128";
const MN1_HOME: &str = "2001:db8:1::100/128";
const MN2_HOME: &str = "2001:db8:1::200/128";
const MN1_PSK: &[u8] = b"mn1-psk-of-enough-length-not-a-secret";
const MN2_PSK: &[u8] = b"mn2-psk-of-enough-length-not-a-secret";

fn fqdn(s: &str) -> Identity {
    Identity::Fqdn(s.into())
}

/// The one child of either side: the home address's traffic, tunnelled.
fn home_child(local_ts: Vec<TrafficSelector>, remote_ts: Vec<TrafficSelector>) -> Vec<ChildConfig> {
    vec![ChildConfig {
        name: "home".into(),
        local_ts,
        remote_ts,
        mode: Mode::Tunnel,
    }]
}

/// The home agent's peer for mobile node `mn` (`mn1` or `mn2`): its
/// identity, its key, its home address.
fn home_agent_peer(mn: &str, psk: &[u8], home: &str) -> PeerConfig {
    PeerConfig {
        name: mn.into(),
        local_id: fqdn("ha.example"),
        remote_id: fqdn(&format!("{mn}.example")),
        auth: Authentication::Psk(Secret::new(psk.to_vec())),
        children: home_child(vec![ts(HOME_AGENT)], vec![ts(home)]),
        ..peer(false)
    }
}

/// A mobile node claiming identity `id` with key `psk`, asking for the
/// home address selectors `home`.
fn mobile_node(id: &str, psk: &[u8], home: Vec<TrafficSelector>) -> PeerConfig {
    PeerConfig {
        name: "home-agent".into(),
        local_id: fqdn(id),
        remote_id: fqdn("ha.example"),
        auth: Authentication::Psk(Secret::new(psk.to_vec())),
        children: home_child(home, vec![ts(HOME_AGENT)]),
        ..peer(true)
    }
}

/// The home agent's endpoint: mn1 first, mn2 added.
fn home_agent() -> Endpoint {
    let mut ha = Endpoint::new(config(home_agent_peer("mn1", MN1_PSK, MN1_HOME))).unwrap();
    ha.add_peer(home_agent_peer("mn2", MN2_PSK, MN2_HOME))
        .unwrap();
    ha
}

/// A pair of `mn` (initiator) and the home agent (responder).
fn pair(mn: PeerConfig) -> Pair {
    let mut p = Pair::new(mn, peer(false));
    p.r = home_agent();
    p
}

fn up_peer(events: &[Event]) -> (String, Identity) {
    events
        .iter()
        .find_map(|e| match e {
            Event::IkeSaUp {
                peer, remote_id, ..
            } => Some((peer.clone(), remote_id.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no IkeSaUp in {events:?}"))
}

#[test]
fn each_mobile_node_gets_its_own_home_address_from_one_endpoint() {
    let mut p = pair(mobile_node("mn1.example", MN1_PSK, vec![ts(MN1_HOME)]));
    p.initiate();
    p.pump();
    let er = events(&mut p.r);
    assert_eq!(up_peer(&er), ("mn1".into(), fqdn("mn1.example")));
    let c = child(&er);
    assert_eq!(c.name, "mn1");
    assert_eq!(c.remote_ts, vec![ts(MN1_HOME)]);
    assert_eq!(c.local_ts, vec![ts(HOME_AGENT)]);
    child(&events(&mut p.i));

    // mn2 from another address, with its own key, to the same endpoint;
    // a prefix holding both home addresses is narrowed to its own.
    let mn2 = mobile_node("mn2.example", MN2_PSK, vec![ts("2001:db8:1::/64")]);
    p.i = Endpoint::new(config(mn2)).unwrap();
    p.ia = "203.0.113.7:500".parse().unwrap();
    p.initiate();
    p.pump();
    let er = events(&mut p.r);
    assert_eq!(up_peer(&er), ("mn2".into(), fqdn("mn2.example")));
    let c = child(&er);
    assert_eq!(c.name, "mn2");
    assert_eq!(c.remote_ts, vec![ts(MN2_HOME)]);
    assert_eq!(child(&events(&mut p.i)).local_ts, vec![ts(MN2_HOME)]);
    // mn2's INITIAL_CONTACT speaks for mn2 only: mn1's IKE SA stays.
    assert!(
        !er.iter().any(|e| matches!(e, Event::IkeSaDown { .. })),
        "{er:?}"
    );
    assert_eq!(p.r.ike_sa_count(), 2);
}

#[test]
fn a_mobile_node_asking_for_another_home_address_is_refused() {
    let mut p = pair(mobile_node("mn1.example", MN1_PSK, vec![ts(MN2_HOME)]));
    p.initiate();
    p.pump();
    let er = events(&mut p.r);
    // The IKE SA is mn1's; the CHILD_SA for mn2's home address is not
    // made (RFC 7296 2.9: TS_UNACCEPTABLE), on neither side.
    assert_eq!(up_peer(&er), ("mn1".into(), fqdn("mn1.example")));
    let refused = |events: &[Event], name: &str| {
        events.iter().any(|e| {
            matches!(e, Event::ChildSaFailed {
                name: n,
                notify: NotifyType::TsUnacceptable,
                ..
            } if n == name)
        })
    };
    assert!(refused(&er, "mn1"), "{er:?}");
    let ei = events(&mut p.i);
    assert!(refused(&ei, "home-agent"), "{ei:?}");
    let installed = |e: &Event| matches!(e, Event::ChildSaEstablished(_));
    assert!(!er.iter().any(installed) && !ei.iter().any(installed));
    assert_eq!(p.r.counters().sent(NotifyType::TsUnacceptable), 1);
}

#[test]
fn claiming_another_mobile_nodes_identity_fails_authentication() {
    // mn1's key under mn2's name: mn2's key verifies AUTH, and fails.
    let mut p = pair(mobile_node("mn2.example", MN1_PSK, vec![ts(MN2_HOME)]));
    p.initiate();
    p.pump();
    assert_eq!(
        down(&events(&mut p.i)),
        DownReason::PeerNotify(NotifyType::AuthenticationFailed)
    );
    assert!(events(&mut p.r).is_empty(), "nothing was announced");
    assert_eq!(p.r.counters().refused(AuthFailure::PskMismatch), 1);
    assert_eq!(p.r.counters().sent(NotifyType::AuthenticationFailed), 1);

    // An identity no peer has.
    let mut p = pair(mobile_node("mn3.example", MN1_PSK, vec![ts(MN1_HOME)]));
    p.initiate();
    p.pump();
    assert_eq!(
        down(&events(&mut p.i)),
        DownReason::PeerNotify(NotifyType::AuthenticationFailed)
    );
    assert_eq!(p.r.counters().refused(AuthFailure::IdentityMismatch), 1);
}

#[test]
fn an_initiator_picks_its_peer_by_name() {
    // An endpoint holding both mobile nodes' configurations initiates as
    // the one named, and the home agent sees that identity.
    let mut mn = Endpoint::new(config(PeerConfig {
        name: "as-mn1".into(),
        ..mobile_node("mn1.example", MN1_PSK, vec![ts(MN1_HOME)])
    }))
    .unwrap();
    mn.add_peer(PeerConfig {
        name: "as-mn2".into(),
        ..mobile_node("mn2.example", MN2_PSK, vec![ts(MN2_HOME)])
    })
    .unwrap();
    let mut p = pair(peer(true));
    p.i = mn;
    let ia = p.ia;
    let id = p.i.initiate_as(p.now, "as-mn2", ia, p.ra).unwrap();
    p.pump();
    let ei = events(&mut p.i);
    assert_eq!(up_peer(&ei), ("as-mn2".into(), fqdn("ha.example")));
    assert_eq!(child(&ei).name, "as-mn2");
    assert!(matches!(ei[0], Event::IkeSaUp { ike, .. } if ike == id));
    assert_eq!(up_peer(&events(&mut p.r)).0, "mn2");
    assert_eq!(
        p.i.initiate_as(p.now, "as-mn3", ia, p.ra),
        Err(IkeError::UnknownPeer("as-mn3".into()))
    );
}

#[test]
fn added_peers_are_validated() {
    let mut ha = home_agent();
    let field = |r: Result<(), IkeError>| match r {
        Err(IkeError::Config(e)) => e.field,
        other => panic!("{other:?}"),
    };
    // The same name twice.
    let again = home_agent_peer("mn2", MN1_PSK, MN1_HOME);
    assert_eq!(field(ha.add_peer(again)), "name");
    // The same identities as another peer.
    let twin = PeerConfig {
        name: "mn2-twin".into(),
        ..home_agent_peer("mn2", MN2_PSK, MN2_HOME)
    };
    assert_eq!(field(ha.add_peer(twin)), "remote_id");
    // IKE proposals other than the endpoint's.
    let other = PeerConfig {
        ike_proposals: vec![gcm(vec![DhGroup::Curve25519])],
        ..home_agent_peer("mn3", MN2_PSK, "2001:db8:1::300/128")
    };
    assert_eq!(field(ha.add_peer(other)), "ike_proposals");
    // Validated like the first peer.
    let short = PeerConfig {
        auth: Authentication::Psk(Secret::new(b"short".to_vec())),
        ..home_agent_peer("mn3", MN2_PSK, "2001:db8:1::300/128")
    };
    assert_eq!(field(ha.add_peer(short)), "psk");
}

#[test]
fn a_rekeyed_ike_sa_stays_with_its_peer() {
    let mut p = pair(mobile_node("mn2.example", MN2_PSK, vec![ts(MN2_HOME)]));
    p.initiate();
    p.pump();
    let er = events(&mut p.r);
    let Some(Event::IkeSaUp { ike, .. }) = er.first() else {
        panic!("{er:?}");
    };
    events(&mut p.i);
    p.r.rekey_ike(p.now, *ike).unwrap();
    p.pump();
    let er = events(&mut p.r);
    let new = er
        .iter()
        .find_map(|e| match e {
            Event::IkeSaRekeyed { new, .. } => Some(*new),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{er:?}"));
    // A CHILD_SA made on the new IKE SA is mn2's, with mn2's selectors.
    p.r.create_child(p.now, new, "home").unwrap();
    p.pump();
    let c = child(&events(&mut p.r));
    assert_eq!(c.name, "mn2");
    assert_eq!(c.remote_ts, vec![ts(MN2_HOME)]);
}
