//! Two matching in-memory peers for the flood test and the handshake
//! benchmark: `a.example` (192.0.2.0/24) and `b.example`
//! (198.51.100.0/24), a PSK, proposals in strongSwan's notation.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bitsgw_ike::crypto::Secret;
use bitsgw_ike::wire::TrafficSelector;
use bitsgw_ike::{
    Authentication, ChildConfig, EndpointConfig, Identity, Lifetimes, Mode, PeerConfig, Retransmit,
};
use std::time::Duration;

/// The configuration of the initiator (`initiator`) or the responder,
/// with IKE proposal `ike` and ESP proposal `esp`, cookies from
/// `cookie_threshold` half-open IKE SAs on, at most `max_half_open`.
pub fn endpoint(
    initiator: bool,
    ike: &str,
    esp: &str,
    cookie_threshold: usize,
    max_half_open: usize,
) -> EndpointConfig {
    let (a, b) = (
        Identity::Fqdn("a.example".into()),
        Identity::Fqdn("b.example".into()),
    );
    let (net_a, net_b) = (
        TrafficSelector::prefix("192.0.2.0".parse().unwrap(), 24),
        TrafficSelector::prefix("198.51.100.0".parse().unwrap(), 24),
    );
    let (local_id, remote_id, local_ts, remote_ts) = if initiator {
        (a, b, net_a, net_b)
    } else {
        (b, a, net_b, net_a)
    };
    EndpointConfig {
        peer: PeerConfig {
            name: "site".into(),
            local_id,
            remote_id,
            auth: Authentication::Psk(Secret::new(b"in-memory-peers-psk-not-a-secret".to_vec())),
            ike_proposals: vec![ike.parse().unwrap()],
            esp_proposals: vec![esp.parse().unwrap()],
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
        },
        cookie_threshold,
        max_half_open,
        half_open_timeout: Duration::from_secs(30),
    }
}
