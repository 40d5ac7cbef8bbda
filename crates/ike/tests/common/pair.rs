//! Two in-memory endpoints, an initiator and a responder, and the
//! peers, proposals and pumping the exchange tests share.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bitsgw_ike::crypto::Secret;
use bitsgw_ike::suite::{DhGroup, Encryption, EspProposal, IkeProposal, Prf};
use bitsgw_ike::wire::TrafficSelector;
use bitsgw_ike::{
    Authentication, ChildConfig, ChildSaEstablished, DownReason, Endpoint, EndpointConfig, Event,
    Identity, Lifetimes, Mode, PeerConfig, Retransmit, Timestamp,
};
use std::net::SocketAddr;
use std::time::Duration;

pub const PSK: &[u8] = b"exchange-test-psk-not-a-secret";

pub fn ts(s: &str) -> TrafficSelector {
    let (a, l) = s.split_once('/').unwrap();
    TrafficSelector::prefix(a.parse().unwrap(), l.parse().unwrap())
}

pub fn gcm(groups: Vec<DhGroup>) -> IkeProposal {
    IkeProposal {
        encryption: vec![Encryption::AES128_GCM16],
        integrity: vec![],
        prf: vec![Prf::HmacSha256],
        groups,
    }
}

pub fn esp_gcm() -> EspProposal {
    EspProposal {
        encryption: vec![Encryption::AES128_GCM16],
        integrity: vec![],
        groups: vec![],
    }
}

pub fn peer(initiator: bool) -> PeerConfig {
    let (a, b) = (
        Identity::Fqdn("a.example".into()),
        Identity::Fqdn("b.example".into()),
    );
    let (net_a, net_b) = (ts("192.0.2.0/24"), ts("198.51.100.0/24"));
    let (local_id, remote_id, local_ts, remote_ts) = if initiator {
        (a, b, net_a, net_b)
    } else {
        (b, a, net_b, net_a)
    };
    PeerConfig {
        name: "site".into(),
        local_id,
        remote_id,
        auth: Authentication::Psk(Secret::new(PSK.to_vec())),
        ike_proposals: vec![gcm(vec![DhGroup::Ecp256])],
        esp_proposals: vec![esp_gcm()],
        children: vec![ChildConfig {
            name: "net".into(),
            local_ts: vec![local_ts],
            remote_ts: vec![remote_ts],
            mode: Mode::Tunnel,
        }],
        lifetimes: Lifetimes {
            ike: Duration::from_secs(3600),
            child: Duration::from_secs(1200),
            jitter: Duration::ZERO,
        },
        liveness: None,
        nat_keepalive: None,
        retransmit: Retransmit::default(),
        initial_contact: true,
    }
}

pub fn config(peer: PeerConfig) -> EndpointConfig {
    EndpointConfig {
        peer,
        cookie_threshold: 100,
        max_half_open: 1000,
        half_open_timeout: Duration::from_secs(30),
    }
}

pub struct Pair {
    pub i: Endpoint,
    pub r: Endpoint,
    pub ia: SocketAddr,
    pub ra: SocketAddr,
    pub now: Timestamp,
}

impl Pair {
    pub fn new(i: PeerConfig, r: PeerConfig) -> Pair {
        Pair::with(config(i), config(r))
    }

    pub fn with(i: EndpointConfig, r: EndpointConfig) -> Pair {
        Pair {
            i: Endpoint::new(i).unwrap(),
            r: Endpoint::new(r).unwrap(),
            ia: "192.0.2.1:500".parse().unwrap(),
            ra: "198.51.100.1:500".parse().unwrap(),
            now: Timestamp::from_secs(1),
        }
    }

    /// Delivers every datagram until both are quiet; returns how many.
    pub fn pump(&mut self) -> usize {
        let mut n = 0;
        loop {
            let mut moved = false;
            while let Some(t) = self.i.poll_transmit() {
                assert_eq!((t.local, t.remote), (self.ia, self.ra));
                self.r
                    .handle_datagram(self.now, t.local, t.remote, &t.contents);
                moved = true;
                n += 1;
            }
            while let Some(t) = self.r.poll_transmit() {
                assert_eq!((t.local, t.remote), (self.ra, self.ia));
                self.i
                    .handle_datagram(self.now, t.local, t.remote, &t.contents);
                moved = true;
                n += 1;
            }
            if !moved {
                return n;
            }
        }
    }

    /// Both sides' first datagrams delivered to the other at once: two
    /// requests that cross in the network.
    pub fn cross(&mut self) {
        let qi = self.i.poll_transmit().unwrap();
        let qr = self.r.poll_transmit().unwrap();
        self.r
            .handle_datagram(self.now, self.ia, self.ra, &qi.contents);
        self.i
            .handle_datagram(self.now, self.ra, self.ia, &qr.contents);
    }

    pub fn initiate(&mut self) -> bitsgw_ike::IkeSaId {
        self.i.initiate(self.now, self.ia, self.ra).unwrap()
    }
}

pub fn events(e: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

pub fn child(events: &[Event]) -> ChildSaEstablished {
    events
        .iter()
        .find_map(|e| match e {
            Event::ChildSaEstablished(c) => Some((**c).clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no CHILD_SA in {events:?}"))
}

pub fn down(events: &[Event]) -> DownReason {
    events
        .iter()
        .find_map(|e| match e {
            Event::IkeSaDown { reason, .. } => Some(*reason),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no IkeSaDown in {events:?}"))
}

/// Runs the exchange and checks that both sides keyed the same CHILD_SA,
/// each direction's keys matching the other side's opposite direction.
pub fn establish(p: &mut Pair) -> (ChildSaEstablished, ChildSaEstablished) {
    p.initiate();
    p.pump();
    let (ei, er) = (events(&mut p.i), events(&mut p.r));
    assert!(
        matches!(
            ei[0],
            Event::IkeSaUp {
                initiator: true,
                ..
            }
        ),
        "{ei:?}"
    );
    assert!(
        matches!(
            er[0],
            Event::IkeSaUp {
                initiator: false,
                ..
            }
        ),
        "{er:?}"
    );
    let (ci, cr) = (child(&ei), child(&er));
    assert_eq!(ci.inbound_spi, cr.outbound_spi);
    assert_eq!(ci.outbound_spi, cr.inbound_spi);
    assert_eq!(ci.inbound, cr.outbound);
    assert_eq!(ci.outbound, cr.inbound);
    assert_ne!(ci.inbound, ci.outbound);
    assert_eq!(ci.suite, cr.suite);
    assert_eq!(ci.local_ts, cr.remote_ts);
    assert_eq!(ci.remote_ts, cr.local_ts);
    assert_eq!(ci.mode, cr.mode);
    assert!(!ci.udp_encapsulation && !cr.udp_encapsulation);
    (ci, cr)
}
