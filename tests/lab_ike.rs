//! Two bitsgw gateways inline in front of two hosts (the two-site lab of
//! `lab_gateway.rs`) whose tunnel SAs are keyed by IKEv2 with a
//! pre-shared key: the policy files name the SAs `"keyed_by": "ike"`, the
//! gateways run IKE on their own network addresses (UDP 500 and 4500 in
//! their host stacks), install the CHILD_SA's SAs and pass traffic; the
//! wire between them carries IKE and ESP only; CHILD_SA rekeys under
//! pings lose none. With a wrong PSK no SA is installed and nothing leaves
//! in clear. The gateways also authenticate with certificates made at
//! test time (a peer's certificate of an untrusted CA is refused). bitsgw
//! also keys a tunnel with strongSwan's charon.
//!
//! Needs root (CI runs as root) and iproute2, iputils-ping. Everything it
//! creates it removes, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../crates/ike/tests/common/pki.rs"]
mod pki;

use common::ike::{
    charon_initiate, child_sa_count, lab_with_authenticated_gateways, lab_with_gateways, mixed_lab,
    ping, policy, show_text, socket, MixedLab,
};
use common::{bitsgw, find_sa, show};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[test]
fn two_gateways_key_their_tunnel_with_ikev2_and_carry_only_esp() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let psk = "correct horse battery staple 1234";
    let (mut lab, stop, seen, caps, [gw_a, gw_b]) = lab_with_gateways("ik", psk, psk, "");
    // IKE_SA_INIT and IKE_AUTH, the SAs installed, the first lease.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ping(&lab, "1") {
        if Instant::now() >= deadline {
            let (_, out_a, log_a) = lab.terminate(gw_a);
            let (_, out_b, log_b) = lab.terminate(gw_b);
            let frames: Vec<String> = seen
                .lock()
                .unwrap()
                .iter()
                .take(20)
                .map(|f| format!("{:02x?}", &f[..f.len().min(48)]))
                .collect();
            panic!(
                "no ping through the IKE-keyed tunnel\nA: {out_a}{log_a}\nB: {out_b}{log_b}\n{}",
                frames.join("\n")
            );
        }
    }
    assert!(ping(&lab, "5"), "pings lost once the tunnel was up");

    // `show sa` lists the SAs IKE installed, with IKE's SPIs (not static
    // ones) and traffic on them; both sides agree on the SPIs.
    let sas_a = show(&socket(&lab, "a"), "sa");
    let sas_b = show(&socket(&lab, "b"), "sa");
    let (a_out, b_in) = (find_sa(&sas_a, "a-to-b"), find_sa(&sas_b, "a-to-b"));
    assert_eq!(a_out["spi"], b_in["spi"], "{a_out} {b_in}");
    assert!(a_out["packets"].as_u64().unwrap() >= 5, "{a_out}");
    let (b_out, a_in) = (find_sa(&sas_b, "b-to-a"), find_sa(&sas_a, "b-to-a"));
    assert_eq!(b_out["spi"], a_in["spi"], "{b_out} {a_in}");

    // `show ike`: the IKE SA and the CHILD_SA with the SPIs installed.
    let ike_a = show(&socket(&lab, "a"), "ike");
    let peer = &ike_a["peers"][0];
    assert_eq!(peer["name"], "site-b", "{ike_a}");
    assert_eq!(peer["ike_sas"].as_array().unwrap().len(), 1, "{ike_a}");
    assert_eq!(peer["ike_sas"][0]["initiator"], true, "{ike_a}");
    let child = &peer["child_sas"][0];
    assert_eq!(child["transform"], "aes-gcm-128", "{ike_a}");
    // The default CHILD_SA lifetime is an hour; it was just established.
    let rekey_in = child["rekey_in_secs"].as_u64().unwrap();
    assert!((3500..=3600).contains(&rekey_in), "{ike_a}");
    assert_eq!(
        u64::from_str_radix(child["outbound_spi"].as_str().unwrap(), 16).unwrap(),
        a_out["spi"].as_u64().unwrap(),
        "{ike_a}"
    );
    let text = show_text(&socket(&lab, "b"), &["ike"]);
    assert!(text.contains("CHILD_SA a-to-b in"), "{text}");
    assert!(text.contains("rekey in"), "{text}");
    assert!(!text.contains(psk), "{text}");

    // `ctl terminate` deletes the IKE SA and its CHILD_SA on both sides:
    // the traffic stops (dropped, not sent in clear); `ctl initiate`
    // brings them back with new SPIs.
    let sock_a = socket(&lab, "a");
    let ctl = |what: &str| {
        let out = bitsgw(&["ctl", what, "site-b", "--socket", sock_a.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ctl("terminate");
    let deadline = Instant::now() + Duration::from_secs(5);
    while ping(&lab, "1") {
        assert!(Instant::now() < deadline, "pings cross after terminate");
    }
    let ike_b = show(&socket(&lab, "b"), "ike");
    assert_eq!(child_sa_count(&ike_b), 0, "{ike_b}");
    ctl("initiate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping(&lab, "1") {
        assert!(Instant::now() < deadline, "no ping after initiate");
    }
    let again = find_sa(&show(&sock_a, "sa"), "a-to-b");
    assert_ne!(again["spi"], a_out["spi"], "{again}");

    // The peers are read at start: a reload that renames an SA they key
    // is refused, and nothing changes.
    let policy_a = lab.dir.join("ike-a.json");
    std::fs::write(&policy_a, policy("a").replace("\"a-to-b\"", "\"a-to-b2\"")).unwrap();
    let reload = bitsgw(&["ctl", "reload", "--socket", sock_a.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&reload.stdout).to_string()
        + &String::from_utf8_lossy(&reload.stderr);
    assert!(!reload.status.success(), "{said}");
    assert!(
        said.contains("\"a-to-b2\" is keyed by IKE, but no peer names it"),
        "{said}"
    );
    std::fs::write(&policy_a, policy("a").replace("1024", "512")).unwrap();
    let reload = bitsgw(&["ctl", "reload", "--socket", sock_a.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&reload.stderr);
    assert!(said.contains("IKE-keyed SA \"b-to-a\" changed"), "{said}");
    assert!(ping(&lab, "2"), "pings lost after a refused reload");
    // An IKE-keyed SA removed by hand: its traffic is dropped, never sent
    // in clear.
    let ctl = bitsgw(&[
        "ctl",
        "remove-sa",
        "a-to-b",
        "--socket",
        sock_a.to_str().unwrap(),
    ]);
    assert!(
        ctl.status.success(),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    assert!(!ping(&lab, "3"), "ping went through without the SA");
    let counters = show(&sock_a, "counters");
    assert!(
        counters["drops"]["no_sa"].as_u64().unwrap() >= 3,
        "{counters}"
    );

    for gw in [gw_a, gw_b] {
        let (ok, out, log) = lab.terminate(gw);
        assert!(ok, "gateway failed: {out}{log}");
        assert!(log.contains("CHILD_SA established"), "{log}");
        assert!(!log.contains(psk), "PSK in the log");
    }
    let (esp, ike) = stop_captures(&stop, caps, &seen);
    assert!(esp >= 12, "only {esp} ESP frames seen");
    assert!(ike >= 4, "only {ike} IKE datagrams seen");
}

#[test]
fn a_wrong_psk_installs_no_sa_and_leaks_nothing() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (mut lab, stop, seen, caps, [gw_a, gw_b]) = lab_with_gateways(
        "iw",
        "correct horse battery staple 1234",
        "incorrect horse battery staple 99",
        "",
    );
    // IKE_SA_INIT and IKE_AUTH take a few round trips at most; then the
    // pings find no SA and are dropped.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!ping(&lab, "3"), "ping went through without a keyed SA");
    let sas_a = show(&socket(&lab, "a"), "sa");
    assert!(
        !sas_a
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "a-to-b" || s["name"] == "b-to-a"),
        "{sas_a}"
    );
    let counters = show(&socket(&lab, "a"), "counters");
    assert!(
        counters["drops"]["no_sa"].as_u64().unwrap() >= 3,
        "{counters}"
    );
    let ike_b = show(&socket(&lab, "b"), "ike");
    let sent = &ike_b["peers"][0]["counters"]["notify_sent"]["AuthenticationFailed"];
    assert!(sent.as_u64().unwrap_or(0) >= 1, "{ike_b}");
    assert_eq!(child_sa_count(&ike_b), 0, "{ike_b}");
    let (_, _, log_a) = lab.terminate(gw_a);
    let (_, _, log_b) = lab.terminate(gw_b);
    // The responder refuses the initiator's AUTH (RFC 7296 2.21.2) and
    // says so; the initiator's IKE SA never comes up.
    assert!(
        log_a.contains("AuthenticationFailed") || log_a.contains("AUTHENTICATION_FAILED"),
        "{log_a}"
    );
    assert!(!log_a.contains("CHILD_SA established"), "{log_a}");
    assert!(!log_b.contains("CHILD_SA established"), "{log_b}");
    let (esp, ike) = stop_captures(&stop, caps, &seen);
    assert_eq!(esp, 0, "ESP without a negotiated SA");
    assert!(ike >= 2, "only {ike} IKE datagrams seen");
}

/// bitsgw A and charon key the tunnel, started by bitsgw or by charon,
/// and pings cross both ways.
fn with_strongswan(tag: &str, bitsgw_initiates: bool) {
    let start = if bitsgw_initiates {
        "initiate"
    } else {
        "respond"
    };
    let Some(MixedLab {
        mut lab,
        swan,
        gateway: gw,
        ..
    }) = mixed_lab(tag, "", start)
    else {
        return;
    };
    if !bitsgw_initiates {
        charon_initiate(&lab, &swan);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ping(&lab, "1") {
        if Instant::now() >= deadline {
            let (_, out, log) = lab.terminate(gw);
            panic!(
                "no ping through the tunnel to charon\nbitsgw: {out}{log}\ncharon: {}",
                std::fs::read_to_string(swan.join("charon.log")).unwrap_or_default()
            );
        }
    }
    assert!(ping(&lab, "3"), "pings from A lost");
    let back = lab.try_exec(
        "hB",
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "192.0.2.10"],
    );
    assert!(
        back.status.success(),
        "pings from B: {}",
        String::from_utf8_lossy(&back.stdout)
    );
    let ike = show(&socket(&lab, "a"), "ike");
    assert_eq!(
        ike["peers"][0]["ike_sas"][0]["initiator"], bitsgw_initiates,
        "{ike}"
    );
    assert_eq!(
        ike["peers"][0]["child_sas"][0]["udp_encapsulation"], true,
        "{ike}"
    );
    let inbound = find_sa(&show(&socket(&lab, "a"), "sa"), "b-to-a");
    assert!(inbound["packets"].as_u64().unwrap() >= 6, "{inbound}");
    let (ok, out, log) = lab.terminate(gw);
    assert!(ok, "bitsgw failed: {out}{log}");
}

#[test]
fn bitsgw_initiates_with_strongswan_and_pings_cross_both_ways() {
    with_strongswan("is", true);
}

#[test]
fn strongswan_initiates_with_bitsgw_and_pings_cross_both_ways() {
    with_strongswan("ir2", false);
}

#[test]
fn child_sa_rekeys_under_traffic_lose_no_ping() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let psk = "correct horse battery staple 1234";
    // A rekeys its CHILD_SA every 2 s (RFC 7296 2.8); B keeps the default.
    let (mut lab, stop, seen, caps, [gw_a, gw_b]) =
        lab_with_gateways("ir", psk, psk, r#""child_lifetime_secs": 2, "#);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ping(&lab, "1") {
        assert!(Instant::now() < deadline, "no ping through the tunnel");
    }
    let first = find_sa(&show(&socket(&lab, "a"), "sa"), "a-to-b");
    // 7 s of pings across at least three rekeys: the new inbound SA is
    // installed before the peer uses it and the old one answers until the
    // new one has verified a packet, so nothing is lost.
    let out = lab.try_exec(
        "hA",
        &["ping", "-c", "35", "-i", "0.2", "-W", "1", "198.51.100.20"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(" 0% packet loss"), "{text}");
    let ike_a = show(&socket(&lab, "a"), "ike");
    assert_eq!(child_sa_count(&ike_a), 1, "{ike_a}");
    let now = find_sa(&show(&socket(&lab, "a"), "sa"), "a-to-b");
    assert_ne!(first["spi"], now["spi"], "no rekey: {now}");
    let (_, _, log_a) = lab.terminate(gw_a);
    let (_, _, log_b) = lab.terminate(gw_b);
    assert!(log_a.matches("rekeys=Some").count() >= 3, "{log_a}");
    assert!(!log_b.contains("SA not installed"), "{log_b}");
    // B, the rekeys' responder, moved its outbound SA on A's deletes.
    assert!(
        log_b.matches("outbound moves to the new SA").count() >= 3,
        "{log_b}"
    );
    stop.store(true, Ordering::SeqCst);
    for c in caps {
        c.join().unwrap();
    }
    common::between_gateways(&seen.lock().unwrap());
}

/// Certificates for the two gateways (ECDSA P-256 for A, Ed25519 for B)
/// from one CA (B's from another CA that A does not trust when
/// `b_untrusted`), as the PEM files [`gateway`] names; keys readable by
/// their owner only.
fn write_certificates(dir: &Path, b_untrusted: bool) {
    let ca = pki::Ca::new(pki::Alg::P256, "bitsgw lab CA");
    let other = pki::Ca::new(pki::Alg::P256, "bitsgw lab CA");
    let a = ca.leaf(pki::Alg::P256, &["gw-a.example"]);
    let b_ca = if b_untrusted { &other } else { &ca };
    let b = b_ca.leaf(pki::Alg::Ed25519, &["gw-b.example"]);
    for (side, leaf) in [("a", &a), ("b", &b)] {
        std::fs::write(dir.join(format!("ike-{side}.pem")), &leaf.pem).unwrap();
        std::fs::write(dir.join(format!("ike-ca-{side}.pem")), &ca.pem).unwrap();
        let key = dir.join(format!("ike-{side}.key"));
        std::fs::write(&key, &leaf.key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[test]
fn two_gateways_authenticate_by_certificates_and_pings_cross() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (mut lab, stop, seen, caps, [gw_a, gw_b]) =
        lab_with_authenticated_gateways("ic", [None, None], "", "initiate", |d| {
            write_certificates(d, false)
        });
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ping(&lab, "1") {
        if Instant::now() >= deadline {
            let (_, out_a, log_a) = lab.terminate(gw_a);
            let (_, out_b, log_b) = lab.terminate(gw_b);
            panic!("no ping through the tunnel\nA: {out_a}{log_a}\nB: {out_b}{log_b}");
        }
    }
    assert!(ping(&lab, "5"), "pings lost once the tunnel was up");
    for side in ["a", "b"] {
        let ike = show(&socket(&lab, side), "ike");
        assert_eq!(
            ike["peers"][0]["ike_sas"].as_array().unwrap().len(),
            1,
            "{ike}"
        );
        assert_eq!(child_sa_count(&ike), 1, "{ike}");
        let refused = &ike["peers"][0]["counters"]["auth_refused"];
        assert_eq!(refused, &serde_json::json!({}), "{ike}");
    }
    let key_a = std::fs::read_to_string(lab.dir.join("ike-a.key")).unwrap();
    let key_line = key_a.lines().nth(1).unwrap().to_string();
    for gw in [gw_a, gw_b] {
        let (ok, out, log) = lab.terminate(gw);
        assert!(ok, "gateway failed: {out}{log}");
        assert!(log.contains("CHILD_SA established"), "{log}");
        assert!(
            !log.contains(&key_line) && !out.contains(&key_line),
            "key in the output"
        );
    }
    let (esp, ike) = stop_captures(&stop, caps, &seen);
    assert!(esp >= 12, "only {esp} ESP frames seen");
    assert!(ike >= 4, "only {ike} IKE datagrams seen");
}

#[test]
fn a_certificate_of_an_untrusted_ca_installs_no_sa_and_leaks_nothing() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (mut lab, stop, seen, caps, [gw_a, gw_b]) =
        lab_with_authenticated_gateways("iu", [None, None], "", "initiate", |d| {
            write_certificates(d, true)
        });
    // A (the initiator) refuses B's certificate and tells B, which takes
    // down the IKE SA it had established (RFC 7296 2.21.2). No CHILD_SA
    // on A: nothing crosses.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ike_a = show(&socket(&lab, "a"), "ike");
        let refused = &ike_a["peers"][0]["counters"]["auth_refused"]["UntrustedChain"];
        if refused.as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "A did not refuse B: {ike_a}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!ping(&lab, "3"), "ping went through without a trusted peer");
    let ike_a = show(&socket(&lab, "a"), "ike");
    assert_eq!(child_sa_count(&ike_a), 0, "{ike_a}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ike_b = show(&socket(&lab, "b"), "ike");
        let received = &ike_b["peers"][0]["counters"]["notify_received"]["AuthenticationFailed"];
        if received.as_u64().unwrap_or(0) >= 1 && child_sa_count(&ike_b) == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "B keeps its SAs: {ike_b}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, _, log_a) = lab.terminate(gw_a);
    let _ = lab.terminate(gw_b);
    assert!(!log_a.contains("CHILD_SA established"), "{log_a}");
    let (esp, _) = stop_captures(&stop, caps, &seen);
    assert_eq!(esp, 0, "ESP from A without an authenticated peer");
}

/// Stops the captures; the ESP frames and IKE datagrams seen between the
/// gateways.
fn stop_captures(
    stop: &AtomicBool,
    caps: Vec<std::thread::JoinHandle<()>>,
    seen: &Mutex<Vec<Vec<u8>>>,
) -> (usize, usize) {
    stop.store(true, Ordering::SeqCst);
    for c in caps {
        c.join().unwrap();
    }
    common::between_gateways(&seen.lock().unwrap())
}
