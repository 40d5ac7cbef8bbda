//! A responder gateway whose peer is `"remote": "any"` (its address not
//! named in the peer's configuration, as a home agent's mobile nodes come
//! from changing care-of addresses): gateway A initiates from an address
//! B's peer entry does not name, IKE picks the peer by the identity A
//! proves, the tunnel comes up and pings cross; `show ike` shows the
//! address the IKE SA runs with.
//!
//! Needs root (CI runs as root) and iproute2, iputils-ping. Everything it
//! creates it removes, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ike::{await_tunnel, lab_with_gateways_edited, ping, show_text, socket};
use common::show;
use std::sync::atomic::Ordering;

#[test]
fn a_responder_with_a_remote_any_peer_is_reached_from_an_address_it_does_not_name() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let psk = "correct horse battery staple 1234";
    let named = r#""remote": "203.0.113.1","#;
    let (mut lab, stop, _seen, caps, [gw_a, gw_b]) = lab_with_gateways_edited(
        "ikany",
        [Some(psk), Some(psk)],
        ("", "initiate"),
        |_| {},
        |b| {
            assert!(b.contains(named), "{b}");
            b.replace(named, r#""remote": "any","#)
        },
    );
    await_tunnel(&mut lab, [gw_a, gw_b]);
    assert!(ping(&lab, "3"), "pings lost once the tunnel was up");

    // B's peer names no address; its IKE SA runs with A's.
    let ike_b = show(&socket(&lab, "b"), "ike");
    let peer = &ike_b["peers"][0];
    assert_eq!(peer["name"], "site-a", "{ike_b}");
    assert_eq!(peer["remote"], "any", "{ike_b}");
    assert_eq!(peer["ike_sas"][0]["remote"], "203.0.113.1:500", "{ike_b}");
    assert_eq!(peer["ike_sas"][0]["initiator"], false, "{ike_b}");
    assert_eq!(peer["child_sas"].as_array().unwrap().len(), 1, "{ike_b}");
    let text = show_text(&socket(&lab, "b"), &["ike"]);
    assert!(
        text.contains("site-a: 203.0.113.2 ... any (respond)"),
        "{text}"
    );
    assert!(text.contains("with 203.0.113.1:500"), "{text}");

    for gw in [gw_a, gw_b] {
        let (ok, out, log) = lab.terminate(gw);
        assert!(ok, "gateway failed: {out}{log}");
        assert!(!log.contains(psk), "PSK in the log");
    }
    stop.store(true, Ordering::SeqCst);
    for c in caps {
        c.join().unwrap();
    }
}
