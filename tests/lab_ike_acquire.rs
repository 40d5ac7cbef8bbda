//! IKEv2 started by traffic, and IKE SAs re-established after a peer
//! restarts. Two bitsgw gateways, A `"start": "trap"` and B `respond`:
//! nothing is negotiated until a packet needs A's outbound SA (RFC 4301
//! acquire), the packets meanwhile are dropped and counted as
//! `acquire_pending`, never sent in clear; with B down the acquires
//! retry with a back-off. bitsgw and strongSwan's charon, charon killed
//! and started again mid-flow: bitsgw's liveness check (RFC 7296 2.4)
//! notices and initiates again, or, as the responder, takes charon's new
//! IKE SA with INITIAL_CONTACT in place of the old one; the wire carries
//! no cleartext meanwhile.
//!
//! Needs root (CI runs as root) and iproute2, iputils-ping; the strongSwan
//! tests need charon (`scripts/setup-test-deps.sh`). Everything it creates
//! it removes, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ike::{
    assert_pings_from_b, capture_router, charon_conf, charon_initiate, finish,
    lab_with_gateways_starting, mixed_lab, ping, show_text, socket, MixedLab, SWAN_PSK,
};
use common::{show, start_charon, Lab};
use serde_json::Value;
use std::time::{Duration, Instant};

const PSK: &str = "correct horse battery staple 1234";

/// A's peer's acquire counters (`show ike`).
fn acquires(lab: &Lab) -> Value {
    show(&socket(lab, "a"), "ike")["peers"][0]["acquires"].clone()
}

fn drops(lab: &Lab, side: &str, reason: &str) -> u64 {
    show(&socket(lab, side), "counters")["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// A's `show ike` once it lists an IKE SA: the status is published every
/// half second, so right after a ping crossed it may not list it yet.
fn shown_with_ike_sa(lab: &Lab) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ike = show(&socket(lab, "a"), "ike");
        if ike["peers"][0]["ike_sas"][0]["spi_i"].is_string() {
            return ike;
        }
        assert!(Instant::now() < deadline, "no IKE SA shown: {ike}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pings from host A until one crosses, at most `limit`.
fn ping_until_through(lab: &Lab, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !ping(lab, "1") {
        if Instant::now() >= deadline {
            return false;
        }
    }
    true
}

#[test]
fn the_first_packet_starts_ike_and_nothing_leaves_in_clear_meanwhile() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (mut lab, stop, seen, caps, [gw_a, gw_b]) =
        lab_with_gateways_starting("iq", PSK, PSK, "", "trap");
    // Started, and idle: no IKE at all.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        common::between_gateways(&seen.lock().unwrap()),
        (0, 0),
        "IKE or ESP before any traffic"
    );
    let before = acquires(&lab);
    assert_eq!(before["started"], 0, "{before}");
    assert_eq!(show(&socket(&lab, "a"), "ike")["peers"][0]["start"], "trap");
    // The first ping asks for the SA; IKE_SA_INIT and IKE_AUTH follow.
    assert!(
        ping_until_through(&lab, Duration::from_secs(15)),
        "no ping through the tunnel IKE keyed on traffic"
    );
    assert!(ping(&lab, "5"), "pings lost once the tunnel was up");
    let after = acquires(&lab);
    assert_eq!(after["started"], 1, "{after}");
    assert_eq!(after["failed"], 0, "{after}");
    assert_eq!(after["negotiating"], false, "{after}");
    let ike_a = show(&socket(&lab, "a"), "ike");
    assert_eq!(
        ike_a["peers"][0]["ike_sas"][0]["initiator"], true,
        "{ike_a}"
    );
    // What the acquire held back is counted, apart from `no_sa`.
    let pending = drops(&lab, "a", "acquire_pending");
    assert!(pending >= 1, "no acquire_pending drops");
    assert_eq!(drops(&lab, "a", "no_sa"), 0);
    let text = show_text(&socket(&lab, "a"), &["counters"]);
    assert!(text.contains("acquire_pending"), "{text}");

    // Panics on any cleartext frame of the hosts.
    let (esp, ike) = finish(&mut lab, &[gw_a, gw_b], (stop, seen, caps));
    assert!(esp >= 12, "only {esp} ESP frames seen");
    assert!(ike >= 4, "only {ike} IKE datagrams seen");
}

#[test]
fn acquires_with_the_responder_down_back_off_and_leak_nothing() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // A gives up on a request after one retransmission (3 s).
    let (mut lab, stop, seen, caps, [gw_a, gw_b]) =
        lab_with_gateways_starting("iqd", PSK, PSK, r#""retransmit_tries": 1, "#, "trap");
    let (ok, out, log) = lab.terminate(gw_b);
    assert!(ok, "gateway B failed: {out}{log}");
    // 16 s of pings, five a second: the first starts a negotiation that
    // fails after 3 s; the next acquires wait 2 s, then 4 s, then 8 s.
    let out = lab.try_exec(
        "hA",
        &["ping", "-c", "80", "-i", "0.2", "-W", "1", "198.51.100.20"],
    );
    assert!(!out.status.success(), "a ping crossed with B down");
    let a = acquires(&lab);
    let started = a["started"].as_u64().unwrap();
    assert!((2..=4).contains(&started), "{a}");
    assert!(a["failed"].as_u64().unwrap() >= 2, "{a}");
    assert!(a["deferred"].as_u64().unwrap() >= 2, "{a}");
    let pending = drops(&lab, "a", "acquire_pending");
    assert!(pending >= 70, "only {pending} acquire_pending drops");
    let ike_a = show(&socket(&lab, "a"), "ike");
    let last_down = ike_a["peers"][0]["last_down"].as_str().unwrap_or("");
    assert!(last_down.contains("Timeout"), "{ike_a}");
    let text = show_text(&socket(&lab, "a"), &["ike"]);
    assert!(
        text.contains(&format!("acquires: {started} negotiations started")),
        "{text}"
    );
    // Each negotiation is an IKE_SA_INIT and its retransmission, nothing
    // per packet.
    let (esp, ike) = common::between_gateways(&seen.lock().unwrap());
    assert_eq!(esp, 0, "ESP without a negotiated SA");
    assert!(
        ike >= 4 && ike as u64 <= 2 * started + 2,
        "{ike} IKE datagrams for {started} negotiations"
    );

    // B back: the next acquire after the back-off (at most 16 s) keys the
    // tunnel.
    let cfg_b = lab.dir.join("ike-gw-b.json");
    let _ = std::fs::remove_file(socket(&lab, "b"));
    let gw_b = lab.spawn(
        "gB",
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", cfg_b.to_str().unwrap()],
    );
    lab.wait_ready(gw_b, &socket(&lab, "b"));
    assert!(
        ping_until_through(&lab, Duration::from_secs(30)),
        "no ping once B was back: {}",
        acquires(&lab)
    );
    finish(&mut lab, &[gw_a, gw_b], (stop, seen, caps));
}

/// bitsgw A and charon key the tunnel; charon is killed and started again
/// with the same configuration while host A pings. bitsgw's `start`
/// `initiate`: its liveness check finds the old IKE SA dead and it
/// initiates again; `trap`: the same, and the next packet's acquire
/// initiates; `respond`: charon initiates (with INITIAL_CONTACT) and
/// bitsgw, with no liveness check, replaces the old state by the new IKE
/// SA.
fn strongswan_restarts(tag: &str, start: &str) {
    let bitsgw_initiates = start != "respond";
    let peer_extra = if bitsgw_initiates {
        r#""liveness_secs": 1, "retransmit_tries": 2, "#
    } else {
        ""
    };
    let Some(MixedLab {
        mut lab,
        swan,
        mut charon,
        gateway: gw,
    }) = mixed_lab(tag, peer_extra, start)
    else {
        return;
    };
    let captures = capture_router(&lab);
    let charon_initiates = |lab: &Lab| {
        if !bitsgw_initiates {
            charon_initiate(lab, &swan);
        }
    };
    charon_initiates(&lab);
    let fail = |lab: &mut Lab, why: &str| -> ! {
        let (_, out, log) = lab.terminate(gw);
        panic!(
            "{why}\nbitsgw: {out}{log}\ncharon: {}",
            std::fs::read_to_string(swan.join("charon.log")).unwrap_or_default()
        );
    };
    if !ping_until_through(&lab, Duration::from_secs(15)) {
        fail(&mut lab, "no ping through the tunnel to charon");
    }
    assert!(ping(&lab, "3"), "pings from A lost");
    let first = shown_with_ike_sa(&lab)["peers"][0]["ike_sas"][0].clone();

    // charon dies without a word and comes back with no state.
    lab.kill(charon);
    std::fs::remove_file(swan.join("charon.vici")).unwrap();
    charon = start_charon(&mut lab, "gB", &swan, &charon_conf(SWAN_PSK));
    charon_initiates(&lab);
    // Liveness: 1 s idle, then a request sent three times over 7 s, then
    // 5 s before initiating again (or the next packet, trapping).
    if !ping_until_through(&lab, Duration::from_secs(40)) {
        fail(&mut lab, "no ping after charon restarted");
    }
    assert!(ping(&lab, "3"), "pings from A lost after the restart");
    assert_pings_from_b(&lab, "3");
    let ike = show(&socket(&lab, "a"), "ike");
    let peer = &ike["peers"][0];
    assert_eq!(peer["ike_sas"].as_array().unwrap().len(), 1, "{ike}");
    assert_ne!(peer["ike_sas"][0]["spi_i"], first["spi_i"], "{ike}");
    assert_eq!(peer["ike_sas"][0]["initiator"], bitsgw_initiates, "{ike}");
    assert_eq!(peer["child_sas"].as_array().unwrap().len(), 1, "{ike}");
    let last_down = peer["last_down"].as_str().unwrap_or("");
    let why = if bitsgw_initiates {
        "Timeout"
    } else {
        "InitialContact"
    };
    assert!(last_down.contains(why), "{ike}");
    if bitsgw_initiates {
        // The dead IKE SA's SAs were removed: packets dropped, not sent.
        let reason = if start == "trap" {
            "acquire_pending"
        } else {
            "no_sa"
        };
        assert!(drops(&lab, "a", reason) >= 1, "no {reason} drops");
    }
    if start == "trap" {
        let a = &peer["acquires"];
        assert_eq!(
            (&a["started"], &a["failed"]),
            (&2.into(), &0.into()),
            "{ike}"
        );
    }
    lab.terminate(charon);
    // Panics on any cleartext frame of the hosts: only ESP in UDP and IKE
    // crossed, before, during and after the restart.
    let (_, ike) = finish(&mut lab, &[gw], captures);
    assert!(ike >= 8, "only {ike} IKE and ESP-in-UDP datagrams seen");
}

#[test]
fn bitsgw_notices_a_restarted_strongswan_and_initiates_again() {
    strongswan_restarts("il", "initiate");
}

#[test]
fn bitsgw_trapping_notices_a_restarted_strongswan_and_traffic_initiates_again() {
    strongswan_restarts("ilt", "trap");
}

#[test]
fn a_restarted_strongswan_initiating_replaces_the_old_ike_sa() {
    strongswan_restarts("ic", "respond");
}

/// bitsgw A trapping, charon responding: the first ping starts the IKE SA
/// with charon; when charon deletes the CHILD_SA (keeping the IKE SA),
/// the next packet's acquire creates a new CHILD_SA on the same IKE SA
/// (RFC 7296 1.3.1).
#[test]
fn traffic_starts_ike_with_strongswan_and_recreates_a_deleted_child_sa() {
    let Some(MixedLab {
        mut lab,
        swan,
        charon,
        gateway: gw,
    }) = mixed_lab("it", "", "trap")
    else {
        return;
    };
    let captures = capture_router(&lab);
    std::thread::sleep(Duration::from_secs(1));
    let idle = show(&socket(&lab, "a"), "ike");
    assert_eq!(
        idle["peers"][0]["ike_sas"].as_array().unwrap().len(),
        0,
        "{idle}"
    );
    assert!(
        ping_until_through(&lab, Duration::from_secs(15)),
        "no ping through the tunnel to charon IKE keyed on traffic"
    );
    let ike = shown_with_ike_sa(&lab);
    let first = ike["peers"][0]["ike_sas"][0]["spi_i"].clone();
    assert_eq!(ike["peers"][0]["acquires"]["started"], 1, "{ike}");

    common::swanctl(&lab, "gB", &swan, &["--terminate", "--child", "net"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !show(&socket(&lab, "a"), "ike")["peers"][0]["child_sas"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the CHILD_SA was not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        ping_until_through(&lab, Duration::from_secs(15)),
        "no ping after charon deleted the CHILD_SA"
    );
    assert!(ping(&lab, "3"), "pings lost on the new CHILD_SA");
    let ike = show(&socket(&lab, "a"), "ike");
    let peer = &ike["peers"][0];
    assert_eq!(peer["acquires"]["started"], 2, "{ike}");
    assert_eq!(peer["ike_sas"][0]["spi_i"], first, "{ike}");
    assert_eq!(peer["child_sas"].as_array().unwrap().len(), 1, "{ike}");
    assert!(drops(&lab, "a", "acquire_pending") >= 2);
    lab.terminate(charon);
    let (_, ike) = finish(&mut lab, &[gw], captures);
    assert!(ike >= 4, "only {ike} IKE and ESP-in-UDP datagrams seen");
}
