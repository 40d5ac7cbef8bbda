//! Several CHILD_SAs of one peer on one IKE SA (RFC 7296 1.3.1), as a
//! mobile node keys them with its home agent (RFC 4877): a transport-mode
//! pair for Binding Updates and Acknowledgements, selected by MH type, and
//! a tunnel-mode pair for payload; and the K bit's move of the IKE SA to
//! a new care-of address without an exchange.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitsgw_ike::wire::{NotifyType, TrafficSelector};
use bitsgw_ike::{ChildConfig, ChildSaEstablished, Event, IkeSaId, Mode, PeerConfig};
use std::net::SocketAddr;
use std::time::Duration;

#[path = "common/pair.rs"]
mod pair;

use pair::*;

/// MH types of RFC 6275 6.1.7 and 6.1.8.
const BU: u8 = 5;
const BA: u8 = 6;
/// Home Test Init (RFC 6275 6.1.3), which no child here selects.
const HOTI: u8 = 1;

fn host(a: &str) -> TrafficSelector {
    let p = if a.contains(':') { 128 } else { 32 };
    TrafficSelector::prefix(a.parse().unwrap(), p)
}

const HOA: &str = "2001:db8:1::100";
const HA: &str = "2001:db8:1::1";

/// The mobile node (initiator) keying signalling first and payload
/// second, or the home agent (responder) with its children the other
/// way round, so that it has to choose by selectors and mode.
fn mobility_peer(mobile_node: bool, mn_sends: u8) -> PeerConfig {
    let mut c = peer(mobile_node);
    let signalling = |local: TrafficSelector, remote: TrafficSelector| ChildConfig {
        name: "signalling".into(),
        local_ts: vec![local],
        remote_ts: vec![remote],
        mode: Mode::Transport,
    };
    let payload = |local: Vec<TrafficSelector>, remote: Vec<TrafficSelector>| ChildConfig {
        name: "payload".into(),
        local_ts: local,
        remote_ts: remote,
        mode: Mode::Tunnel,
    };
    let everywhere = ts("2001:db8::/32");
    c.children = if mobile_node {
        vec![
            signalling(
                host(HOA).with_mh_types(mn_sends, mn_sends),
                host(HA).with_mh_types(BA, BA),
            ),
            payload(vec![host(HOA)], vec![everywhere]),
        ]
    } else {
        // The payload child comes first and its selectors cover the
        // signalling too: only the mode tells them apart.
        vec![
            payload(vec![everywhere], vec![host(HOA)]),
            signalling(
                host(HA).with_mh_types(BA, BA),
                host(HOA).with_mh_types(BU, BU),
            ),
        ]
    };
    c
}

fn established(events: &[Event]) -> Vec<ChildSaEstablished> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaEstablished(c) => Some((**c).clone()),
            _ => None,
        })
        .collect()
}

fn named<'a>(children: &'a [ChildSaEstablished], name: &str) -> &'a ChildSaEstablished {
    children
        .iter()
        .find(|c| c.child == name)
        .unwrap_or_else(|| panic!("no CHILD_SA {name} in {children:?}"))
}

/// Both children up on both sides; the mobile node's and the home
/// agent's CHILD_SAs by name.
fn establish_both(p: &mut Pair) -> (Vec<ChildSaEstablished>, Vec<ChildSaEstablished>) {
    p.initiate();
    p.pump();
    let (ui, ur) = (
        established(&events(&mut p.i)),
        established(&events(&mut p.r)),
    );
    assert_eq!((ui.len(), ur.len()), (2, 2), "{ui:?} {ur:?}");
    for name in ["signalling", "payload"] {
        let (ci, cr) = (named(&ui, name), named(&ur, name));
        assert_eq!(
            (ci.inbound_spi, ci.outbound_spi),
            (cr.outbound_spi, cr.inbound_spi)
        );
        assert_eq!((&ci.inbound, &ci.outbound), (&cr.outbound, &cr.inbound));
        assert_eq!((&ci.local_ts, &ci.remote_ts), (&cr.remote_ts, &cr.local_ts));
        assert_eq!(ci.mode, cr.mode);
    }
    (ui, ur)
}

#[test]
fn a_transport_child_of_mh_types_and_a_tunnel_child_share_one_ike_sa() {
    let mut p = Pair::new(mobility_peer(true, BU), mobility_peer(false, BU));
    let (ui, ur) = establish_both(&mut p);
    let (si, pi) = (named(&ui, "signalling"), named(&ui, "payload"));
    assert_eq!(si.mode, Mode::Transport);
    assert_eq!(si.local_ts, vec![host(HOA).with_mh_types(BU, BU)]);
    assert_eq!(si.remote_ts, vec![host(HA).with_mh_types(BA, BA)]);
    assert_eq!(si.local_ts[0].mh_types(), Some((BU, BU)));
    assert_eq!(pi.mode, Mode::Tunnel);
    assert_eq!(
        (&pi.local_ts, &pi.remote_ts),
        (&vec![host(HOA)], &vec![ts("2001:db8::/32")])
    );
    assert_eq!(named(&ur, "signalling").mode, Mode::Transport);
    assert_eq!(si.ike, pi.ike);
    // The first in IKE_AUTH, the second in one CREATE_CHILD_SA after it.
    assert_eq!(p.i.counters().requests_sent.create_child_sa, 1);
    assert_eq!(p.i.counters().sent(NotifyType::UseTransportMode), 1);
    assert_eq!(p.r.counters().sent(NotifyType::UseTransportMode), 1);
}

#[test]
fn the_children_are_rekeyed_and_deleted_each_on_its_own() {
    let mut p = Pair::new(mobility_peer(true, BU), mobility_peer(false, BU));
    let (ui, ur) = establish_both(&mut p);
    let (si, pi) = (
        named(&ui, "signalling").clone(),
        named(&ui, "payload").clone(),
    );
    let ike = si.ike;

    // Rekeying the signalling child keeps its mode and MH type selectors,
    // and leaves the payload child alone.
    p.i.rekey_child(p.now, ike, si.inbound_spi).unwrap();
    p.pump();
    let (ei, er) = (events(&mut p.i), events(&mut p.r));
    let (ni, nr) = (established(&ei), established(&er));
    assert_eq!((ni.len(), nr.len()), (1, 1), "{ei:?}");
    let (ni, nr) = (&ni[0], &nr[0]);
    assert_eq!(
        (ni.child.as_str(), nr.child.as_str()),
        ("signalling", "signalling")
    );
    assert_eq!(ni.rekeys, Some(si.inbound_spi));
    assert_eq!((ni.mode, nr.mode), (Mode::Transport, Mode::Transport));
    assert_eq!((&ni.local_ts, &ni.remote_ts), (&si.local_ts, &si.remote_ts));
    let deleted: Vec<(&str, u32)> = ei
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaDeleted {
                child, inbound_spi, ..
            } => Some((child.as_str(), *inbound_spi)),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec![("signalling", si.inbound_spi)]);

    // The home agent rekeys the payload child.
    let pr = named(&ur, "payload").clone();
    p.r.rekey_child(p.now, pr.ike, pr.inbound_spi).unwrap();
    p.pump();
    let (ei, er) = (events(&mut p.i), events(&mut p.r));
    let (ni, nr) = (established(&ei), established(&er));
    assert_eq!((ni.len(), nr.len()), (1, 1), "{er:?}");
    assert_eq!(
        (ni[0].child.as_str(), nr[0].child.as_str()),
        ("payload", "payload")
    );
    assert_eq!(ni[0].rekeys, Some(pi.inbound_spi));
    assert_eq!(ni[0].mode, Mode::Tunnel);

    // Deleting the new payload CHILD_SA deletes it alone.
    p.i.delete_child(p.now, ike, ni[0].inbound_spi).unwrap();
    p.pump();
    let er = events(&mut p.r);
    assert_eq!(
        er,
        vec![Event::ChildSaDeleted {
            ike: pr.ike,
            name: "site".into(),
            child: "payload".into(),
            inbound_spi: nr[0].inbound_spi,
            outbound_spi: nr[0].outbound_spi,
        }]
    );
}

#[test]
fn a_child_of_an_mh_type_the_responder_does_not_select_is_refused_and_asked_again() {
    // The mobile node asks for Home Test Init where the home agent keys
    // Binding Updates: no child of the home agent fits (its payload child
    // is kept off the home agent's own address here, or it would take the
    // request in tunnel mode).
    let mut r = mobility_peer(false, BU);
    r.children[0].local_ts = vec![ts("2001:db8:2::/48")];
    let mut p = Pair::new(mobility_peer(true, HOTI), r);
    p.initiate();
    p.pump();
    let (ei, er) = (events(&mut p.i), events(&mut p.r));
    let failed = |evs: &[Event]| {
        evs.iter()
            .filter_map(|e| match e {
                Event::ChildSaFailed { child, notify, .. } => Some((child.clone(), *notify)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        failed(&ei),
        vec![("signalling".to_string(), NotifyType::TsUnacceptable)]
    );
    assert_eq!(p.r.counters().sent(NotifyType::TsUnacceptable), 1);
    assert_eq!(failed(&er).len(), 1);
    // The payload child came up all the same, on the home agent's
    // narrower selectors.
    let up = established(&ei);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].child, "payload");
    assert_eq!(up[0].remote_ts, vec![ts("2001:db8:2::/48")]);

    // Not lost: asked for again after the retry delay, and refused again.
    let next = p.i.poll_timeout().unwrap();
    assert!(next > p.now && next <= p.now.saturating_add(Duration::from_secs(61)));
    p.now = next;
    p.i.handle_timeout(p.now);
    assert_eq!(p.pump(), 2);
    assert_eq!(p.i.counters().requests_sent.create_child_sa, 2);
    assert_eq!(
        failed(&events(&mut p.i)),
        vec![("signalling".to_string(), NotifyType::TsUnacceptable)]
    );
}

#[test]
fn a_tunnel_request_for_a_transport_only_child_gets_no_proposal_chosen() {
    let mut i = mobility_peer(true, BU);
    i.children[0].mode = Mode::Tunnel;
    let mut r = mobility_peer(false, BU);
    r.children[0].local_ts = vec![ts("2001:db8:2::/48")];
    let mut p = Pair::new(i, r);
    p.initiate();
    p.pump();
    assert_eq!(p.r.counters().sent(NotifyType::NoProposalChosen), 1);
    assert!(events(&mut p.i).iter().any(|e| matches!(
        e,
        Event::ChildSaFailed { child, notify: NotifyType::NoProposalChosen, .. } if child == "signalling"
    )));
}

#[test]
fn child_configurations_are_checked_naming_the_field() {
    let mut c = mobility_peer(true, BU);
    c.children[1].name = "signalling".into();
    let e = bitsgw_ike::Endpoint::new(config(c))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "peer site: children[1].name: another child has this name"
    );
    let mut c = mobility_peer(true, BU);
    c.children[1].local_ts.clear();
    let e = bitsgw_ike::Endpoint::new(config(c))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "peer site: children[1].local_ts: empty");
    let mut c = mobility_peer(true, BU);
    c.children[0].remote_ts[0].start_port = 0x0700;
    let e = bitsgw_ike::Endpoint::new(config(c))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "peer site: children[0].remote_ts[0]: selects nothing");
    let mut c = mobility_peer(true, BU);
    c.children.clear();
    let e = bitsgw_ike::Endpoint::new(config(c))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "peer site: children: empty");
}

/// The mobile node's IKE SA and the home agent's, after `establish_both`.
fn ike_sas(ui: &[ChildSaEstablished], ur: &[ChildSaEstablished]) -> (IkeSaId, IkeSaId) {
    (ui[0].ike, ur[0].ike)
}

#[test]
fn the_k_bit_moves_the_ike_sa_to_the_new_care_of_address_without_an_exchange() {
    let mut i = mobility_peer(true, BU);
    i.liveness = Some(Duration::from_secs(10));
    let mut p = Pair::new(i, mobility_peer(false, BU));
    let (ui, ur) = establish_both(&mut p);
    let (ike_i, ike_r) = ike_sas(&ui, &ur);
    let sent = p.i.counters().requests_sent;
    // RFC 4877 with the K bit: after the Binding Update and its
    // Acknowledgement, both ends move the IKE SA on their own.
    let coa: SocketAddr = "192.0.2.77:500".parse().unwrap();
    p.i.update_addresses(p.now, ike_i, coa, p.ra).unwrap();
    p.r.update_addresses(p.now, ike_r, p.ra, coa).unwrap();
    assert!(p.i.poll_transmit().is_none() && p.r.poll_transmit().is_none());
    assert_eq!(p.i.counters().requests_sent, sent);
    // From now on Pair::pump checks every datagram is between coa and ra.
    p.ia = coa;
    p.now = p.now.saturating_add(Duration::from_secs(10));
    p.i.handle_timeout(p.now);
    assert_eq!(p.pump(), 2, "the liveness check and its answer");
    assert_eq!(p.i.counters().responses_received.informational, 1);
    // A CHILD_SA rekey runs over the new addresses, and its new SAs are
    // between them.
    let payload = named(&ui, "payload");
    p.i.rekey_child(p.now, ike_i, payload.inbound_spi).unwrap();
    p.pump();
    let (ni, nr) = (
        established(&events(&mut p.i)),
        established(&events(&mut p.r)),
    );
    assert_eq!((ni.len(), nr.len()), (1, 1));
    assert_eq!((ni[0].local, ni[0].remote), (coa, p.ra));
    assert_eq!((nr[0].local, nr[0].remote), (p.ra, coa));
    assert_eq!(ni[0].rekeys, Some(payload.inbound_spi));
    // An IKE SA that is not there, or not established, can not move.
    assert!(p.i.update_addresses(p.now, IkeSaId(7), coa, p.ra).is_err());
}

#[test]
fn a_request_outstanding_when_the_ike_sa_moves_is_sent_again_over_the_new_path() {
    let mut p = Pair::new(mobility_peer(true, BU), mobility_peer(false, BU));
    let (ui, ur) = establish_both(&mut p);
    let (ike_i, ike_r) = ike_sas(&ui, &ur);
    p.i.rekey_child(p.now, ike_i, ui[0].inbound_spi).unwrap();
    // Lost on the old path.
    let lost = p.i.poll_transmit().unwrap();
    let coa: SocketAddr = "192.0.2.77:500".parse().unwrap();
    p.i.update_addresses(p.now, ike_i, coa, p.ra).unwrap();
    p.r.update_addresses(p.now, ike_r, p.ra, coa).unwrap();
    assert_eq!(p.i.poll_timeout(), Some(p.now));
    p.i.handle_timeout(p.now);
    p.ia = coa;
    let again = p.i.poll_transmit().unwrap();
    assert_eq!(
        (again.local, again.remote, &again.contents),
        (coa, p.ra, &lost.contents)
    );
    p.r.handle_datagram(p.now, coa, p.ra, &again.contents);
    p.pump();
    assert_eq!(established(&events(&mut p.i)).len(), 1);
}

#[test]
fn an_ike_sa_on_udp_4500_stays_there_when_it_moves() {
    // The initiator behind a NAT (its address is translated to NAT): the
    // IKE SA moves to UDP 4500 (RFC 7296 2.23).
    let nat: SocketAddr = "203.0.113.9:4500".parse().unwrap();
    let mut p = Pair::new(mobility_peer(true, BU), mobility_peer(false, BU));
    p.initiate();
    let deliver = |p: &mut Pair| loop {
        let mut moved = false;
        while let Some(t) = p.i.poll_transmit() {
            moved = true;
            let from = SocketAddr::new(nat.ip(), if t.local.port() == 500 { 4321 } else { 4500 });
            p.r.handle_datagram(p.now, from, t.remote, &t.contents);
        }
        while let Some(t) = p.r.poll_transmit() {
            moved = true;
            let to = SocketAddr::new(p.ia.ip(), if t.remote.port() == 4321 { 500 } else { 4500 });
            p.i.handle_datagram(p.now, t.local, to, &t.contents);
        }
        if !moved {
            return;
        }
    };
    deliver(&mut p);
    let (ui, ur) = (
        established(&events(&mut p.i)),
        established(&events(&mut p.r)),
    );
    assert!(ui[0].udp_encapsulation && ur[0].udp_encapsulation);
    let (ike_i, ike_r) = ike_sas(&ui, &ur);
    // Moved with port 500 given, as an owner that knows only addresses
    // would: both stay on 4500.
    let coa: SocketAddr = "192.0.2.77:500".parse().unwrap();
    p.i.update_addresses(p.now, ike_i, coa, "198.51.100.1:500".parse().unwrap())
        .unwrap();
    p.r.update_addresses(p.now, ike_r, p.ra, "203.0.113.10:500".parse().unwrap())
        .unwrap();
    p.i.rekey_child(p.now, ike_i, ui[0].inbound_spi).unwrap();
    let t = p.i.poll_transmit().unwrap();
    assert_eq!(
        (t.local, t.remote),
        (
            "192.0.2.77:4500".parse().unwrap(),
            "198.51.100.1:4500".parse().unwrap()
        )
    );
    p.r.handle_datagram(
        p.now,
        "203.0.113.10:4500".parse().unwrap(),
        t.remote,
        &t.contents,
    );
    let answer = p.r.poll_transmit().unwrap();
    assert_eq!(answer.remote, "203.0.113.10:4500".parse().unwrap());
}

#[test]
fn the_children_after_the_first_are_asked_for_one_at_a_time() {
    // RFC 7296 2.3: a window of one request. Three children: the first in
    // IKE_AUTH, then one CREATE_CHILD_SA per round trip.
    let mut i = peer(true);
    for (name, half) in [("low", "198.51.100.0/25"), ("high", "198.51.100.128/25")] {
        i.children.push(ChildConfig {
            name: name.into(),
            local_ts: vec![ts("192.0.2.0/24")],
            remote_ts: vec![ts(half)],
            mode: Mode::Tunnel,
        });
    }
    let mut p = Pair::new(i, peer(false));
    p.initiate();
    let mut requests_per_round = Vec::new();
    loop {
        let requests: Vec<_> = std::iter::from_fn(|| p.i.poll_transmit()).collect();
        requests_per_round.push(requests.len());
        if requests.is_empty() {
            break;
        }
        for t in requests {
            p.r.handle_datagram(p.now, t.local, t.remote, &t.contents);
        }
        while let Some(t) = p.r.poll_transmit() {
            p.i.handle_datagram(p.now, t.local, t.remote, &t.contents);
        }
    }
    // IKE_SA_INIT, IKE_AUTH, then the two CREATE_CHILD_SAs.
    assert_eq!(requests_per_round, [1, 1, 1, 1, 0]);
    let up = established(&events(&mut p.i));
    let names: Vec<&str> = up.iter().map(|c| c.child.as_str()).collect();
    assert_eq!(names, ["net", "low", "high"]);
    assert_eq!(up[2].remote_ts, vec![ts("198.51.100.128/25")]);
}
