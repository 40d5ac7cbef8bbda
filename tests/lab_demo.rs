//! `bitsgw lab` (what `make demo` runs), shortened, as tests: the mobility scenario's phases end
//! as they must (a binding at the home agent while away and none at home,
//! a NAT detected only behind the NAT, no ping lost in a make-before-break
//! handover, only ESP between the Internet and the home agent), and the
//! site-to-site scenario carries TCP through ESP.
//!
//! Needs root (CI runs as root) and the packages of
//! `scripts/setup-test-deps.sh`. The lab removes everything it made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bitsgw, is_root};

fn lab(args: &[&str]) -> serde_json::Value {
    lab_with_output(args).0
}

/// The lab's JSON summary (its last line) and everything it printed.
fn lab_with_output(args: &[&str]) -> (serde_json::Value, String) {
    assert!(
        is_root(),
        "this test needs root (network namespaces); CI runs as root"
    );
    let mut all = vec!["lab"];
    all.extend_from_slice(args);
    all.extend(["--short", "--json"]);
    let out = bitsgw(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bitsgw lab failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or("");
    let v = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (v, stdout.into_owned())
}

#[test]
fn mobility_lab_phases() {
    let r = lab(&["mobility"]);
    let phases = r["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "register over IPv6",
            "handover to public IPv4",
            "handover behind the NAT",
            "back to IPv6",
            "break-before-make to IPv6 A",
            "return home"
        ]
    );
    let nat: Vec<bool> = phases.iter().map(|p| p["nat"].as_bool().unwrap()).collect();
    assert_eq!(
        nat,
        [false, false, true, false, false, false],
        "NAT only behind the NAT"
    );
    for p in &phases[1..4] {
        assert_eq!(
            p["pings_sent"], p["pings_received"],
            "make-before-break lost pings: {p}"
        );
        assert!(p["ba_taken"].as_u64().unwrap() >= 1, "{p}");
    }
    let bindings: Vec<u64> = r["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert_eq!(
        bindings,
        [1, 1, 1, 1, 1, 0],
        "a binding while away, none at home"
    );
    assert!(r["wire_frames"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(
        r["wire_cleartext"], 0,
        "only ESP and IKE between the Internet and the home agent"
    );
    // Keyed by IKEv2: no SA with a static key on either appliance, an IKE
    // SA and the CHILD_SAs in every phase away from home, and tshark saw
    // the IKE exchanges and the Binding Updates / Acknowledgements on the
    // SPIs of the negotiated BU/BA CHILD_SA.
    assert_eq!(r["static_sas"], 0, "{r}");
    for p in &phases[..5] {
        let ike = p["ike"].as_str().unwrap();
        assert!(
            ike.starts_with("IKE SA ") && ike.contains("BU/BA") && ike.contains("payload IPv4"),
            "{p}"
        );
    }
    assert!(phases[2]["ike"].as_str().unwrap().contains("behind a NAT"));
    let exchanges: Vec<&str> = r["ike_exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["exchange"].as_str().unwrap())
        .collect();
    for e in ["IKE_SA_INIT", "IKE_AUTH", "CREATE_CHILD_SA"] {
        assert!(exchanges.contains(&e), "{r}");
    }
    assert!(r["bu_frames"].as_u64().unwrap() >= 4, "{r}");
    assert!(r["ba_frames"].as_u64().unwrap() >= 4, "{r}");
    // With the keys the appliances wrote to their
    // danger_wireshark_keys_file, tshark decrypted the ESP and found
    // Binding Updates (MH type 5) and Acknowledgements (MH type 6) in it.
    assert!(r["bu_decoded"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["ba_decoded"].as_u64().unwrap() >= 1, "{r}");
    for t in r["tcp_bits_per_second"].as_array().unwrap() {
        assert!(t["bps"].as_f64().unwrap() > 1e6, "TCP moved: {t}");
    }
    // The lab cleaned up after itself.
    let ns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&ns.stdout).contains("bglm-"));
}

#[test]
fn site_to_site_lab_carries_tcp() {
    let (r, out) = lab_with_output(&["site-to-site"]);
    let bps = r["tcp_bits_per_second"][0]["bps"].as_f64().unwrap();
    assert!(bps > 1e6, "{r}");
    // Keyed by IKEv2: the IKE SA and its CHILD_SA are shown, and the SAs
    // IKE installed are shown whole (mode, transform, backend).
    assert!(out.contains("keyed by IKEv2"), "{out}");
    assert!(
        out.contains("IKE SA ") && out.contains("CHILD_SA b-to-a in "),
        "{out}"
    );
    let sas = out
        .split("gateway A: security associations")
        .nth(1)
        .unwrap_or_default();
    assert!(
        sas.contains("a-to-b: outbound spi")
            && sas.contains("esp tunnel 203.0.113.1 -> 203.0.113.2 aes-gcm-128"),
        "{out}"
    );
    assert!(!sas.contains('?'), "{out}");
}
