//! A responder gateway whose peers are `"remote": "any"` (their addresses
//! not named in their configuration, as a home agent's mobile nodes come
//! from changing care-of addresses): gateway A initiates from an address
//! B's peer entries do not name; B's two `any` peers share one IKE
//! endpoint, which picks A's peer by the identity A proves; the tunnel
//! comes up and pings cross; `show ike` shows the address the IKE SA runs
//! with. A peer naming A's address takes A's datagrams ahead of an `any`
//! peer of the same local address.
//!
//! Needs root (CI runs as root) and iproute2, iputils-ping. Everything it
//! creates it removes, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ike::{await_tunnel, lab_with_gateways_edited, ping, show_text, socket};
use common::show;
use common::Lab;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// B's policy with SAs for one more mobile node (`b-to-other`,
/// `other-to-b`, for 192.0.2.200), and B's configuration with that node's
/// `any` peer ahead of site A's, whose `remote` becomes `any` too: site
/// A's peer is the second of the shared endpoint.
fn two_any_peers(dir: &Path, b: String) -> String {
    let named = r#""remote": "203.0.113.1","#;
    assert!(b.contains(named), "{b}");
    other_any_peer(dir, b.replace(named, r#""remote": "any","#))
}

/// B's policy and configuration with the other mobile node's `any` peer
/// ahead of site A's (as in [`two_any_peers`]), site A's entry as it is.
fn other_any_peer(dir: &Path, b: String) -> String {
    let policy = dir.join("ike-b.json");
    let text = std::fs::read_to_string(&policy).unwrap();
    let entry = |sa: &str| {
        format!(
            r#"{{"name": "{sa}", "local": "198.51.100.0/24", "remote": "192.0.2.200/32", "action": "protect", "sa": "{sa}"}},"#
        )
    };
    let sa = |name: &str, direction: &str| {
        format!(
            r#"{{"name": "{name}", "direction": "{direction}", "keyed_by": "ike", "mode": "tunnel",
      "tunnel": {{"local": "203.0.113.2", "remote": "203.0.113.200"}}}},"#
        )
    };
    let text = text
        .replacen(
            "\"outbound\": [",
            &format!("\"outbound\": [{}", entry("b-to-other")),
            1,
        )
        .replacen(
            "\"inbound\": [",
            &format!("\"inbound\": [{}", entry("other-to-b")),
            1,
        )
        .replacen(
            "\"sad\": [",
            &format!(
                "\"sad\": [{}{}",
                sa("b-to-other", "outbound"),
                sa("other-to-b", "inbound")
            ),
            1,
        );
    std::fs::write(&policy, text).unwrap();
    let other = r#"{"name": "other", "local": "203.0.113.2", "remote": "any",
    "local_id": "fqdn:gw-b.example", "remote_id": "fqdn:other.example", "psk_file": "ike-b.psk",
    "ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "esp_proposals": ["aes128gcm16"],
    "start": "respond", "children": [{"outbound": "b-to-other", "inbound": "other-to-b"}]}, "#;
    b.replacen("\"peers\": [", &format!("\"peers\": [{other}"), 1)
}

const PSK: &str = "correct horse battery staple 1234";

/// The two-site lab with B's configuration edited by `edit_b` (as
/// [`lab_with_gateways_edited`] takes it), A initiating, the tunnel up.
struct Run {
    lab: Lab,
    stop: Arc<AtomicBool>,
    captures: Vec<std::thread::JoinHandle<()>>,
    gateways: [usize; 2],
}

impl Run {
    fn start(tag: &str, edit_b: impl FnOnce(&Path, String) -> String) -> Run {
        let (mut lab, stop, _, captures, gateways) = lab_with_gateways_edited(
            tag,
            [Some(PSK), Some(PSK)],
            ("", "initiate"),
            |_| {},
            edit_b,
        );
        await_tunnel(&mut lab, gateways);
        Run {
            lab,
            stop,
            captures,
            gateways,
        }
    }

    /// Both gateways ended cleanly, the PSK in neither's log.
    fn finish(mut self) {
        for gw in self.gateways {
            let (ok, out, log) = self.lab.terminate(gw);
            assert!(ok, "gateway failed: {out}{log}");
            assert!(!log.contains(PSK), "PSK in the log");
        }
        self.stop.store(true, Ordering::SeqCst);
        for c in self.captures {
            c.join().unwrap();
        }
    }
}

#[test]
fn a_responder_with_remote_any_peers_is_reached_from_an_address_it_does_not_name() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let run = Run::start("ikany", two_any_peers);
    let lab = &run.lab;
    assert!(ping(lab, "3"), "pings lost once the tunnel was up");

    // B's peers name no address; site A's IKE SA runs with A's, the other
    // peer has none.
    let ike_b = show(&socket(lab, "b"), "ike");
    let (other, peer) = (&ike_b["peers"][0], &ike_b["peers"][1]);
    assert_eq!(other["name"], "other", "{ike_b}");
    assert_eq!(other["ike_sas"].as_array().unwrap().len(), 0, "{ike_b}");
    assert_eq!(other["child_sas"].as_array().unwrap().len(), 0, "{ike_b}");
    assert_eq!(peer["name"], "site-a", "{ike_b}");
    assert_eq!(peer["remote"], "any", "{ike_b}");
    assert_eq!(peer["ike_sas"][0]["remote"], "203.0.113.1:500", "{ike_b}");
    assert_eq!(peer["ike_sas"][0]["initiator"], false, "{ike_b}");
    assert_eq!(peer["child_sas"].as_array().unwrap().len(), 1, "{ike_b}");
    let text = show_text(&socket(lab, "b"), &["ike"]);
    assert!(
        text.contains("site-a: 203.0.113.2 ... any (respond)"),
        "{text}"
    );
    assert!(text.contains("with 203.0.113.1:500"), "{text}");
    run.finish();
}

#[test]
fn a_peer_naming_the_address_wins_over_the_any_peers_of_its_local_address() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // Site A's datagrams would fail authentication at the `any` endpoint
    // (A is not other.example): they reach site A's own.
    let run = Run::start("ikexact", other_any_peer);
    let lab = &run.lab;
    let ike_b = show(&socket(lab, "b"), "ike");
    let (other, peer) = (&ike_b["peers"][0], &ike_b["peers"][1]);
    assert_eq!(other["ike_sas"].as_array().unwrap().len(), 0, "{ike_b}");
    assert_eq!(other["counters"]["datagrams_received"], 0, "{ike_b}");
    assert_eq!(peer["remote"], "203.0.113.1", "{ike_b}");
    assert_eq!(peer["child_sas"].as_array().unwrap().len(), 1, "{ike_b}");
    run.finish();
}
