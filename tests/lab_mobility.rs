//! The `mn` and `ha` roles as running appliances, driven over their
//! control sockets: a mobile node appliance and a home agent appliance in
//! one network namespace, each on two TUN ports, the namespace's kernel
//! routing between their network ports. `ctl move` makes the mobile node
//! register its care-of address with the home agent (`show bindings` on
//! both), `ctl refresh` re-registers, `ctl move home` de-registers, `show
//! counters` has the mobility counters, and requests a role can not take
//! are refused.
//!
//! Needs root (CI runs as root) and iproute2 (`scripts/setup-test-deps.sh`).
//! Everything it creates it removes, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bitsgw, wait_for, Lab};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An appliance configuration in the lab's folder: `role` on TUN ports
/// `<prefix>h` (host) and `<prefix>n` (network).
fn config(lab: &Lab, role: &str, prefix: &str, mobility: &str) -> PathBuf {
    let policy = repo().join(format!("policies/dsmip-hostwide-{role}.json"));
    let text = format!(
        r#"{{"role": "{role}", "policy": "{}",
  "ports": {{"host": {{"type": "tun", "name": "{prefix}h"}}, "network": {{"type": "tun", "name": "{prefix}n"}}}},
  "workers": 1, "control_socket": "{}", "state_dir": "{role}-state",
  "mobility": {mobility}}}"#,
        policy.display(),
        socket(lab, role).display()
    );
    let path = lab.dir.join(format!("{role}.json"));
    std::fs::write(&path, text).unwrap();
    path
}

fn socket(lab: &Lab, role: &str) -> PathBuf {
    lab.dir.join(format!("{role}.sock"))
}

/// `bitsgw ARGS --socket SOCKET`: success, stdout, stderr.
fn ctl(socket: &Path, args: &[&str]) -> (bool, String, String) {
    let mut full: Vec<&str> = args.to_vec();
    let s = socket.to_str().unwrap();
    full.extend_from_slice(&["--socket", s]);
    let o = bitsgw(&full);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn json(socket: &Path, what: &str) -> Value {
    let (ok, out, err) = ctl(socket, &["show", what, "--json"]);
    assert!(ok, "show {what}: {err}");
    serde_json::from_str(&out).unwrap()
}

/// Waits (at most 15 s) until `f` holds for `show bindings --json`.
fn until(socket: &Path, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = json(socket, "bindings");
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: never happened: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn mn_and_ha_appliances_register_refresh_and_deregister_over_control_requests() {
    let mut lab = Lab::new("m", &["n"]);
    let ha_cfg = config(
        &lab,
        "ha",
        "ha",
        r#"{"address": "home_agent_1", "address_v4": "203.0.113.1",
            "home_prefixes": ["2001:db8:1::/64"],
            "nodes": [{"home": "home_address_1", "home_v4": "home_address_v4_1"}]}"#,
    );
    let mn_cfg = config(
        &lab,
        "mn",
        "mn",
        r#"{"home_address": "home_address_1", "home_agent": "home_agent_1",
            "home_agent_v4": "203.0.113.1", "home_v4": "0.0.0.0"}"#,
    );
    let bin = env!("CARGO_BIN_EXE_bitsgw");
    let ha = lab.spawn("n", &[bin, "run", ha_cfg.to_str().unwrap()]);
    let mn = lab.spawn("n", &[bin, "run", mn_cfg.to_str().unwrap()]);
    let (ha_sock, mn_sock) = (socket(&lab, "ha"), socket(&lab, "mn"));
    wait_for(&ha_sock);
    wait_for(&mn_sock);
    // The namespace's kernel is the Internet between the two network
    // ports: to the home agent via han, to the mobile node via mnn.
    lab.exec("n", &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    for dev in ["hah", "han", "mnh", "mnn"] {
        lab.exec("n", &["ip", "link", "set", dev, "up"]);
    }
    lab.exec(
        "n",
        &[
            "ip",
            "-6",
            "route",
            "add",
            "2001:db8:1::1/128",
            "dev",
            "han",
        ],
    );
    for to in ["2001:db8:2::100/128", "2001:db8:1::100/128"] {
        lab.exec("n", &["ip", "-6", "route", "add", to, "dev", "mnn"]);
    }

    // At home: nothing registered, nothing sent.
    let (ok, out, err) = ctl(&mn_sock, &["show", "bindings"]);
    assert!(ok, "{err}");
    assert!(out.contains("attachment          home"), "{out}");
    assert!(out.contains("registered care-of  none"), "{out}");
    let (ok, out, _) = ctl(&ha_sock, &["show", "bindings"]);
    assert!(ok);
    assert!(out.contains("0 bindings"), "{out}");

    // A movement: the BU goes, the BA comes back.
    let (ok, out, err) = ctl(&mn_sock, &["ctl", "move", "2001:db8:2::100"]);
    assert!(ok, "{err}");
    assert!(out.contains("make-before-break"), "{out}");
    let v = until(&mn_sock, "registration", |v| {
        v["registered"] == "2001:db8:2::100"
    });
    assert_eq!(v["registering"], Value::Null);
    assert_eq!(v["nat"], false);
    assert_eq!(v["home_v4"], "192.0.2.100");
    let v = json(&ha_sock, "bindings");
    let b = &v["bindings"][0];
    assert_eq!(v["bindings"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(b["home"], "2001:db8:1::100");
    assert_eq!(b["home_v4"], "192.0.2.100");
    assert_eq!(b["care_of"], "2001:db8:2::100");
    assert_eq!(b["nat"], false);
    assert_eq!(b["lifetime_secs"], 420);
    assert!(b["expires_in_secs"].as_u64().unwrap() <= 420);
    let seq = b["seq"].as_u64().unwrap();
    let (ok, out, _) = ctl(&ha_sock, &["show", "bindings"]);
    assert!(ok);
    assert!(
        out.contains("2001:db8:1::100 (IPv4 192.0.2.100)")
            && out.contains("care-of 2001:db8:2::100  nat no"),
        "{out}"
    );

    // The counters: every mobility drop and event by name.
    let c = json(&mn_sock, "counters");
    assert!(c["mobility"]["bu_sent"].as_u64().unwrap() >= 1, "{c:#}");
    assert_eq!(c["mobility"]["ba_accepted"], 1, "{c:#}");
    for name in ["no_care_of_address", "ba_unexpected", "mh_malformed"] {
        assert!(c["drops"][name].is_u64(), "{name} missing: {c:#}");
    }
    let c = json(&ha_sock, "counters");
    assert_eq!(c["mobility"]["bu_accepted"], 1, "{c:#}");
    let (ok, out, _) = ctl(&ha_sock, &["show", "counters"]);
    assert!(ok && out.contains("mobility:") && out.contains("binding_created"));

    // A refresh re-registers with a new sequence number.
    let (ok, _, err) = ctl(&mn_sock, &["ctl", "refresh"]);
    assert!(ok, "{err}");
    until(&ha_sock, "refresh", |v| {
        v["bindings"][0]["seq"].as_u64() > Some(seq)
    });

    // Requests a role or an address can not take are refused.
    for (sock, args, words) in [
        (
            &mn_sock,
            vec!["ctl", "move", "2001:db8:1::100"],
            "home address",
        ),
        (&mn_sock, vec!["ctl", "move", "nowhere"], "care-of address"),
        (&mn_sock, vec!["ctl", "move", "fe80::1"], "link-local"),
        (
            &mn_sock,
            vec!["ctl", "move", "::ffff:203.0.113.5"],
            "IPv4-mapped",
        ),
        (
            &mn_sock,
            vec!["ctl", "refresh", "--break"],
            "--break goes with move",
        ),
        (
            &ha_sock,
            vec!["ctl", "move", "2001:db8:2::100"],
            "needs the mn role",
        ),
        (&ha_sock, vec!["ctl", "refresh"], "needs the mn role"),
    ] {
        let (ok, _, err) = ctl(sock, &args);
        assert!(!ok, "{args:?} accepted");
        assert!(err.contains(words), "{args:?}: {err}");
    }

    // Home again, break-before-make: the binding is deleted.
    let (ok, out, err) = ctl(&mn_sock, &["ctl", "move", "home", "--break"]);
    assert!(ok, "{err}");
    assert!(out.contains("break-before-make"), "{out}");
    until(&ha_sock, "de-registration", |v| {
        v["bindings"].as_array().is_some_and(Vec::is_empty)
    });
    let v = until(&mn_sock, "at home", |v| v["registering"].is_null());
    assert_eq!(v["attachment"], "home");
    assert_eq!(v["registered"], Value::Null);

    for child in [mn, ha] {
        let (ok, out, err) = lab.terminate(child);
        assert!(ok, "{err}");
        assert!(out.contains("mobility:"), "{out}");
    }
}
