//! `bitsgw check` on appliance configurations and policy files: valid ones
//! print what they resolve to with keys masked; bad ones are refused with
//! an error naming file, entry and field, and exit status 2.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(file: &Path, json: bool) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bitsgw"));
    cmd.arg("check").arg(file);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every key in a policy file, as the hex digits it holds.
fn keys(policy: &Path) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(policy).unwrap()).unwrap();
    let mut out = Vec::new();
    for sa in v["sad"].as_array().unwrap() {
        for k in ["enc_key", "auth_key"] {
            if let Some(s) = sa[k].as_str() {
                out.push(s.trim_start_matches("0x").to_ascii_lowercase());
            }
        }
    }
    out
}

#[test]
fn every_policy_and_example_config_checks_and_masks_keys() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.push(repo().join("examples/configs/gateway-a.json"));
    for f in &files {
        for json in [false, true] {
            let (ok, out, err) = check(f, json);
            assert!(ok, "{}: {err}", f.display());
            let policy = if f.ends_with("gateway-a.json") {
                repo().join("policies/site-to-site-a.json")
            } else {
                f.clone()
            };
            for k in keys(&policy) {
                // Any 8 consecutive hex digits of a key would be a leak.
                for w in 0..k.len().saturating_sub(8) {
                    assert!(
                        !out.to_ascii_lowercase().contains(&k[w..w + 8]),
                        "{}: key material in output",
                        f.display()
                    );
                }
            }
            if json {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                assert!(v.is_object());
            } else {
                assert!(out.contains("masked"));
            }
        }
    }
}

#[test]
fn bad_appliance_configs_are_refused_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = repo().join("policies/site-to-site-a.json");
    let good = format!(
        r#"{{"role": "gateway", "policy": "{}",
  "ports": {{"host": {{"type": "af_packet", "interface": "veth0"}}, "network": {{"type": "tun", "name": "tun0"}}}},
  "workers": 2}}"#,
        policy.display()
    );
    let cases: &[(&str, &str, &[&str])] = &[
        (
            r#""role": "gateway""#,
            r#""role": "router""#,
            &[r#"field "role""#, "\"router\""],
        ),
        (
            r#""role": "gateway""#,
            r#""role": "ha""#,
            &[r#"field "role""#, "mobility stage"],
        ),
        (
            r#""workers": 2"#,
            r#""workers": 0"#,
            &[r#"field "workers""#],
        ),
        (
            r#""workers": 2"#,
            r#""workers": 2, "mtu": 100"#,
            &[r#"field "mtu""#],
        ),
        (
            r#""type": "tun""#,
            r#""type": "tap""#,
            &[r#"field "ports.network.type""#],
        ),
        (
            r#""interface": "veth0""#,
            r#""ifname": "veth0""#,
            &[r#"field "ports.host.ifname""#, "unknown field"],
        ),
        (
            r#""name": "tun0""#,
            r#""name": "this-name-is-far-too-long""#,
            &[r#"field "ports.network.name""#],
        ),
        (
            r#""workers": 2"#,
            r#""workers": 2, "icmp_source_v4": "2001:db8::1""#,
            &[r#"field "icmp_source_v4""#],
        ),
        (
            r#""workers": 2"#,
            r#""workers": 2, "addresses": {"host": ["192.0.2.1"]}"#,
            &[r#"field "addresses.host[0]""#, "prefix length"],
        ),
        (
            r#""workers": 2"#,
            r#""workers": 2, "addresses": {"host": ["192.0.2.1/33"]}"#,
            &[r#"field "addresses.host[0]""#, "from 1 to 32"],
        ),
        (
            r#""workers": 2"#,
            r#""workers": 2, "addresses": {"host": ["192.0.2.1/24"], "network": ["192.0.2.1/24"]}"#,
            &[r#"field "addresses.network[0]""#, "twice"],
        ),
        (
            r#""workers": 2"#,
            r#""workers": 2, "addresses": {"network": ["203.0.113.1/24"]}"#,
            &[r#"field "addresses.network""#, "af_packet"],
        ),
        (
            r#""workers": 2"#,
            r#""workers": 2, "addresses": {"host": ["192.0.2.1/24"], "host_mac": "01:00:00:00:00:01"}"#,
            &[r#"field "addresses.host_mac""#],
        ),
        (
            r#""workers": 2"#,
            r#""workers": 2, "addresses": {"hosts": []}"#,
            &[r#"field "addresses.hosts""#, "unknown field"],
        ),
        (
            r#""workers": 2"#,
            r#""wrokers": 2"#,
            &[r#"field "wrokers""#, "unknown field"],
        ),
        (
            "site-to-site-a.json",
            "no-such-policy.json",
            &["no-such-policy.json", "can not be read"],
        ),
    ];
    let path = dir.join("appliance.json");
    std::fs::write(&path, &good).unwrap();
    let (ok, out, err) = check(&path, false);
    assert!(ok, "{err}");
    assert!(out.contains("network port tun tun0"));
    let with_addresses = good.replacen(
        r#""workers": 2"#,
        r#""workers": 2, "addresses": {"host": ["192.0.2.1/24", "2001:db8::1/64"], "host_mac": "02:00:00:00:00:01"}"#,
        1,
    );
    std::fs::write(&path, &with_addresses).unwrap();
    let (ok, _, err) = check(&path, false);
    assert!(ok, "{err}");
    for (from, to, words) in cases {
        assert!(good.contains(from), "{from}");
        std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
        let (ok, _, err) = check(&path, false);
        assert!(!ok, "{to}: accepted");
        assert!(
            err.contains(&path.display().to_string()) || err.contains("no-such-policy"),
            "{err}"
        );
        for w in *words {
            assert!(err.contains(w), "{to}: {err:?} lacks {w:?}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
