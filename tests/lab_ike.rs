//! Two bitsgw gateways inline in front of two hosts (the two-site lab of
//! `lab_gateway.rs`) whose tunnel SAs are keyed by IKEv2 with a
//! pre-shared key: the policy files name the SAs `"keyed_by": "ike"`, the
//! gateways run IKE on their own network addresses (UDP 500 and 4500 in
//! their host stacks), install the CHILD_SA's SAs and pass traffic; the
//! wire between them carries IKE and ESP only; CHILD_SA rekeys under
//! pings lose none. With a wrong PSK no SA is installed and nothing leaves
//! in clear. The gateways also authenticate with certificates made at
//! test time (a peer's certificate of an untrusted CA is refused). bitsgw
//! also keys a tunnel with strongSwan's charon (AES-GCM and AES-CBC with
//! HMAC-SHA-256, either side starting), and tshark, given the keys charon
//! logged, decrypts every IKE message and ESP packet on the wire between
//! them and finds every ICV good. CHILD_SA and IKE SA rekeys started by
//! either side under an iperf3 transfer to charon drop nothing in bitsgw,
//! whose ESP counts match the wire's.
//!
//! Needs root (CI runs as root) and iproute2, iputils-ping. Everything it
//! creates it removes, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../crates/ike/tests/common/pki.rs"]
mod pki;
#[path = "../crates/ike/tests/common/tshark.rs"]
mod tshark;

use common::ike::{
    assert_pings_from_b, await_tunnel, charon_initiate, child_sa_count, finish,
    lab_with_authenticated_gateways, lab_with_gateways, mixed_lab_with, ping, policy, show_text,
    socket, two_children, Mixed, MixedLab,
};
use common::{bitsgw, find_sa, iperf3, show, Lab};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Two children of one peer (RFC 7296 1.3.1): ICMP on one CHILD_SA, TCP
/// on another, both of the gateways' one IKE SA; each flow goes through
/// its own SAs and the wire carries ESP and IKE only.
#[test]
fn two_children_of_one_peer_each_carry_their_own_traffic() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let psk = Some("correct horse battery staple 1234");
    let (mut lab, stop, seen, caps, [gw_a, gw_b]) =
        lab_with_authenticated_gateways("i2", [psk, psk], "", "initiate", two_children);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ping(&lab, "1") {
        assert!(Instant::now() < deadline, "no ping through the ICMP child");
    }
    assert!(ping(&lab, "5"), "pings lost once the ICMP child was up");
    let report = iperf3(&mut lab, "hA", "hB", "198.51.100.20", "1");
    let sent = report["end"]["sum_sent"]["bytes"].as_u64().unwrap();
    assert!(sent > 0, "{report}");

    for (side, out, inb) in [("a", "a-to-b", "b-to-a"), ("b", "b-to-a", "a-to-b")] {
        let ike = show(&socket(&lab, side), "ike");
        let peer = &ike["peers"][0];
        assert_eq!(peer["ike_sas"].as_array().unwrap().len(), 1, "{ike}");
        let mut children: Vec<String> = peer["child_sas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["child"].as_str().unwrap().to_string())
            .collect();
        children.sort();
        assert_eq!(children, [out.to_string(), format!("{out}-tcp")], "{ike}");
        let sas = show(&socket(&lab, side), "sa");
        for name in [out, inb, &format!("{out}-tcp"), &format!("{inb}-tcp")] {
            let sa = find_sa(&sas, name);
            assert!(sa["packets"].as_u64().unwrap() > 0, "{name}: {sa}");
        }
    }
    // The two sides agree on each SA's SPI.
    let (sas_a, sas_b) = (
        show(&socket(&lab, "a"), "sa"),
        show(&socket(&lab, "b"), "sa"),
    );
    for name in ["a-to-b", "b-to-a", "a-to-b-tcp", "b-to-a-tcp"] {
        let (a, b) = (find_sa(&sas_a, name), find_sa(&sas_b, name));
        assert_eq!(a["spi"], b["spi"], "{name}: {a} {b}");
    }
    let (esp, ike) = finish(&mut lab, &[gw_a, gw_b], (stop, seen, caps));
    assert!(esp > 0 && ike >= 6, "{esp} ESP, {ike} IKE");
}

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

/// Starts dumpcap on `dev` of namespace `ns`, writing `file`; returns
/// once it captures.
fn dumpcap(lab: &mut Lab, ns: &str, dev: &str, file: &Path) -> usize {
    use std::io::BufRead as _;
    let index = lab.spawn(ns, &["dumpcap", "-i", dev, "-w", file.to_str().unwrap()]);
    let err = lab.children[index].stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(err).lines();
    let started = lines.any(|l| l.is_ok_and(|l| l.starts_with("Capturing on")));
    assert!(started, "dumpcap on {ns}/{dev} did not start");
    // The rest of its stderr, so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    index
}

/// bitsgw A and charon (`setup`) key the tunnel, started by bitsgw or by
/// charon; once a ping crosses, the lab and bitsgw's index, with the
/// capture `before_charon` started.
fn mixed_tunnel(
    tag: &str,
    setup: &Mixed<'_>,
    before_charon: impl FnOnce(&mut Lab),
) -> Option<MixedLab> {
    let m = mixed_lab_with(tag, setup, before_charon)?;
    if setup.start == "respond" {
        charon_initiate(&m.lab, &m.swan);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut m = m;
    while !ping(&m.lab, "1") {
        if Instant::now() >= deadline {
            let (_, out, log) = m.lab.terminate(m.gateway);
            panic!(
                "no ping through the tunnel to charon\nbitsgw: {out}{log}\ncharon: {}",
                std::fs::read_to_string(m.swan.join("charon.log")).unwrap_or_default()
            );
        }
    }
    Some(m)
}

/// bitsgw A and charon key the tunnel with the IKE and ESP proposals
/// `ike` and `esp`, started by bitsgw or by charon, and pings cross both
/// ways. tshark decrypts every IKE message and ESP packet captured
/// between them with the keys charon logged, and finds every ICV good.
fn with_strongswan(tag: &str, bitsgw_initiates: bool, ike: &str, esp: &str) {
    let start = if bitsgw_initiates {
        "initiate"
    } else {
        "respond"
    };
    let setup = Mixed {
        ike,
        esp,
        charon_extra: ("", ""),
        peer_extra: "",
        start,
    };
    let mut capture = None;
    let Some(MixedLab {
        mut lab,
        swan,
        gateway: gw,
        ..
    }) = mixed_tunnel(tag, &setup, |lab| {
        let pcap = lab.dir.join("wire.pcapng");
        capture = Some((dumpcap(lab, "r", "rb", &pcap), pcap));
    })
    else {
        return;
    };
    let (capture, pcap) = capture.unwrap();
    assert!(ping(&lab, "3"), "pings from A lost");
    assert_pings_from_b(&lab, "3");
    let ike_sa = show(&socket(&lab, "a"), "ike");
    assert_eq!(
        ike_sa["peers"][0]["ike_sas"][0]["initiator"], bitsgw_initiates,
        "{ike_sa}"
    );
    assert_eq!(
        ike_sa["peers"][0]["child_sas"][0]["udp_encapsulation"], true,
        "{ike_sa}"
    );
    let sas = show(&socket(&lab, "a"), "sa");
    let inbound = find_sa(&sas, "b-to-a");
    assert!(inbound["packets"].as_u64().unwrap() >= 6, "{inbound}");
    let outbound = find_sa(&sas, "a-to-b");
    // Let the kernel hand over its last block before stopping dumpcap.
    std::thread::sleep(Duration::from_millis(1200));
    lab.terminate(capture);
    let (ok, out, log) = lab.terminate(gw);
    assert!(ok, "bitsgw failed: {out}{log}");
    decodes_with_tshark(
        &pcap,
        &swan,
        &ike_sa["peers"][0]["ike_sas"][0],
        [&outbound, &inbound],
        bitsgw_initiates,
        (ike, esp),
    );
}

/// tshark decrypts the IKE SA's messages and both ESP SAs' packets in
/// `pcap` with the keys charon logged: every IKE message decrypted with
/// its checksum correct, the IKE_SA_INIT and IKE_AUTH exchanges complete,
/// every ESP packet `esp.icv_good == 1`, at least the pings' worth each
/// way; with the ESP keys changed no ESP packet verifies.
fn decodes_with_tshark(
    pcap: &Path,
    swan: &Path,
    ike_sa: &serde_json::Value,
    [outbound, inbound]: [&serde_json::Value; 2],
    bitsgw_initiates: bool,
    (ike, esp): (&str, &str),
) {
    let log = std::fs::read_to_string(swan.join("charon.log")).unwrap();
    let ike_keys = tshark::IkeSaKeys::from_charon_log(
        &log,
        0,
        ike_sa["spi_i"].as_str().unwrap(),
        ike_sa["spi_r"].as_str().unwrap(),
        ike,
    )
    .unwrap_or_else(|| panic!("charon logged no IKE SA keys: {log}"));
    let (_, _, encryption, integrity) = tshark::algorithms(esp);
    let key = |label: &str| tshark::logged_key(&log, label).unwrap_or_default();
    // bitsgw's outbound SA carries the keys of the direction it sends in,
    // named by who started the exchange (RFC 7296 2.17).
    let (out_dir, in_dir) = if bitsgw_initiates {
        ("initiator", "responder")
    } else {
        ("responder", "initiator")
    };
    let esp_sa = |sa: &serde_json::Value, src: &str, dst: &str, dir: &str| tshark::EspSaKeys {
        src: src.into(),
        dst: dst.into(),
        spi: format!("{:08x}", sa["spi"].as_u64().unwrap()),
        encryption_key: key(&format!("encryption {dir} key")),
        integrity_key: key(&format!("integrity {dir} key")),
        encryption,
        integrity,
    };
    let esp_keys = [
        esp_sa(outbound, "203.0.113.1", "203.0.113.6", out_dir),
        esp_sa(inbound, "203.0.113.6", "203.0.113.1", in_dir),
    ];
    let decoded = tshark::decode(pcap, std::slice::from_ref(&ike_keys), &esp_keys);
    let ike_counts = tshark::check_ike(&decoded).unwrap_or_else(|e| panic!("tshark: {e}"));
    assert_eq!(ike_counts.get(&tshark::exchange::IKE_SA_INIT), Some(&2));
    assert_eq!(ike_counts.get(&tshark::exchange::IKE_AUTH), Some(&2));
    let spis = [esp_keys[0].spi.as_str(), esp_keys[1].spi.as_str()];
    let esp_counts = tshark::check_esp(&decoded, &spis).unwrap_or_else(|e| panic!("tshark: {e}"));
    // 4 pings from A and 3 from B, each answered.
    for spi in spis {
        assert!(esp_counts.get(spi) >= Some(&7), "{spi}: {esp_counts:?}");
    }
    let mut wrong = esp_keys;
    for k in &mut wrong {
        tshark::corrupt(&mut k.encryption_key);
        tshark::corrupt(&mut k.integrity_key);
    }
    let refused = tshark::decode(pcap, &[ike_keys], &wrong);
    assert!(
        refused.iter().all(|d| !d.esp_icv_good),
        "a wrong ESP key verified: {refused:?}"
    );
}

#[test]
fn bitsgw_initiates_with_strongswan_and_pings_cross_both_ways() {
    with_strongswan("is", true, "aes128gcm16-prfsha256-ecp256", "aes128gcm16");
}

#[test]
fn strongswan_initiates_with_bitsgw_and_pings_cross_both_ways() {
    with_strongswan("ir2", false, "aes128gcm16-prfsha256-ecp256", "aes128gcm16");
}

#[test]
fn bitsgw_initiates_with_strongswan_over_aes_cbc_hmac_sha256() {
    with_strongswan(
        "isc",
        true,
        "aes128-sha256-prfsha256-ecp256",
        "aes128-sha256",
    );
}

#[test]
fn strongswan_initiates_with_bitsgw_over_aes_cbc_hmac_sha256() {
    with_strongswan(
        "irc",
        false,
        "aes256-sha256-prfsha256-x25519",
        "aes256-sha256",
    );
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
    await_tunnel(&mut lab, [gw_a, gw_b]);
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

/// nftables counters on the router of the ESP (in UDP, non-zero SPI after
/// the UDP header) it forwards each way between bitsgw and charon.
fn count_esp_on_router(lab: &Lab) {
    let rules = r#"table inet esp_count {
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname "ra" oifname "rb" udp dport 4500 @th,64,32 != 0 counter comment "from_bitsgw"
    iifname "rb" oifname "ra" udp dport 4500 @th,64,32 != 0 counter comment "to_bitsgw"
  }
}
"#;
    let file = lab.dir.join("esp_count.nft");
    std::fs::write(&file, rules).unwrap();
    lab.exec("r", &["nft", "-f", file.to_str().unwrap()]);
}

/// The router's ESP counts: (from bitsgw, to bitsgw).
fn esp_on_router(lab: &Lab) -> (u64, u64) {
    let out = lab.exec("r", &["nft", "-j", "list", "table", "inet", "esp_count"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let count = |name: &str| {
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x.get("rule"))
            .find(|r| r["comment"] == name)
            .and_then(|r| {
                r["expr"]
                    .as_array()?
                    .iter()
                    .find_map(|e| e["counter"]["packets"].as_u64())
            })
            .unwrap_or_else(|| panic!("no counter {name}: {out}"))
    };
    (count("from_bitsgw"), count("to_bitsgw"))
}

/// bitsgw's dropped-packet total and ESP counts: (drops, protected,
/// decrypted).
fn esp_counters(lab: &Lab) -> (u64, u64, u64) {
    let c = show(&socket(lab, "a"), "counters");
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or_else(|| panic!("{c}"));
    (
        n(&c["drops_total"]),
        n(&c["ipsec"]["outbound_protected"]),
        n(&c["ipsec"]["inbound_decrypted"]),
    )
}

/// Rekeys under an iperf3 TCP transfer of 12 s through the tunnel to
/// strongSwan, CHILD_SAs rekeyed every `child` seconds and the IKE SA
/// every `ike` seconds by the side named (the other side's lifetimes are
/// long enough never to come first): bitsgw drops nothing during the
/// transfer (no replay drop, no packet without an SA), every ESP packet
/// it counts protected crossed the router to charon and every one that
/// crossed from charon it decrypted, so both sides agree packet for
/// packet.
fn rekeys_under_iperf3(tag: &str, child_by_bitsgw: bool, ike_by_bitsgw: bool) {
    let (child, ike_life, long) = (3, 5, 60);
    let pick = |by_bitsgw: bool, secs: u32| {
        if by_bitsgw {
            (secs, long)
        } else {
            (long, secs)
        }
    };
    let (bitsgw_child, charon_child) = pick(child_by_bitsgw, child);
    let (bitsgw_ike, charon_ike) = pick(ike_by_bitsgw, ike_life);
    let charon_ike = format!("rekey_time = {charon_ike}s\n    over_time = 60s\n    rand_time = 0s");
    let charon_child =
        format!("rekey_time = {charon_child}s\n        life_time = 120s\n        rand_time = 0s");
    let extra = format!(
        r#""child_lifetime_secs": {bitsgw_child}, "ike_lifetime_secs": {bitsgw_ike}, "rekey_jitter_secs": 1, "#
    );
    let setup = Mixed {
        ike: "aes128gcm16-prfsha256-ecp256",
        esp: "aes128gcm16",
        charon_extra: (&charon_ike, &charon_child),
        peer_extra: &extra,
        start: "initiate",
    };
    let Some(MixedLab {
        mut lab,
        swan,
        gateway: gw,
        ..
    }) = mixed_tunnel(tag, &setup, |lab| count_esp_on_router(lab))
    else {
        return;
    };
    let before = (esp_counters(&lab), esp_on_router(&lab));
    let report = common::iperf3(&mut lab, "hA", "hB", "198.51.100.20", "12");
    // Whatever is in flight lands before the counters are read.
    std::thread::sleep(Duration::from_millis(500));
    let after = (esp_counters(&lab), esp_on_router(&lab));
    let drops = show(&socket(&lab, "a"), "counters")["drops"].clone();
    let (ok, out, log) = lab.terminate(gw);
    assert!(ok, "bitsgw failed: {out}{log}");
    let charon_log = std::fs::read_to_string(swan.join("charon.log")).unwrap();
    let context =
        || format!("{before:?} {after:?}\ndrops: {drops}\nbitsgw: {log}\ncharon: {charon_log}");
    // The rekeys happened, each started by the side named: bitsgw's
    // CHILD_SAs made by a rekey and IKE SAs rekeyed; charon's
    // CREATE_CHILD_SA requests (its rekeys) and responses (bitsgw's).
    assert!(log.matches("rekeys=Some").count() >= 3, "{}", context());
    assert!(log.matches("IKE SA rekeyed").count() >= 2, "{}", context());
    let charon_started = charon_log
        .matches("generating CREATE_CHILD_SA request")
        .count();
    let bitsgw_started = charon_log
        .matches("generating CREATE_CHILD_SA response")
        .count();
    let wanted = |by_bitsgw: bool, n: usize| usize::from(by_bitsgw) * n;
    assert!(
        bitsgw_started >= wanted(child_by_bitsgw, 3) + wanted(ike_by_bitsgw, 2),
        "{}",
        context()
    );
    assert!(
        charon_started >= wanted(!child_by_bitsgw, 3) + wanted(!ike_by_bitsgw, 2),
        "{}",
        context()
    );
    let ((drops0, out0, in0), (wire_out0, wire_in0)) = before;
    let ((drops1, out1, in1), (wire_out1, wire_in1)) = after;
    assert_eq!(drops1 - drops0, 0, "bitsgw dropped: {}", context());
    assert_eq!(out1 - out0, wire_out1 - wire_out0, "{}", context());
    assert_eq!(in1 - in0, wire_in1 - wire_in0, "{}", context());
    assert!(out1 - out0 > 1000, "{}", context());
    eprintln!(
        "{tag}: iperf3 through rekeys: {:.3} Gbit/s, {} retransmits; ESP {} out, {} in",
        report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9,
        report["end"]["sum_sent"]["retransmits"],
        out1 - out0,
        in1 - in0
    );
}

#[test]
fn child_sa_rekeys_by_strongswan_and_ike_sa_rekeys_by_bitsgw_under_iperf3_drop_nothing() {
    rekeys_under_iperf3("iq1", false, true);
}

#[test]
fn child_sa_rekeys_by_bitsgw_and_ike_sa_rekeys_by_strongswan_under_iperf3_drop_nothing() {
    rekeys_under_iperf3("iq2", true, false);
}
