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
    for c in ["gateway-a.json", "ha.json", "mn.json"] {
        files.push(repo().join("examples/configs").join(c));
    }
    for f in &files {
        for json in [false, true] {
            let (ok, out, err) = check(f, json);
            assert!(ok, "{}: {err}", f.display());
            let policy = if f.ends_with("gateway-a.json") {
                repo().join("policies/site-to-site-a.json")
            } else if f.ends_with("ha.json") {
                repo().join("policies/dsmip-hostwide-ha.json")
            } else if f.ends_with("mn.json") {
                repo().join("policies/dsmip-hostwide-mn.json")
            } else {
                f.clone()
            };
            let keys = keys(&policy);
            for k in &keys {
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
            } else if keys.is_empty() {
                // Every SA is left to IKEv2: no key to mask.
                assert!(out.contains("keyed by IKE"), "{}", f.display());
            } else {
                assert!(out.contains("masked"), "{}", f.display());
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
            &[r#"field "workers""#, "one worker"],
        ),
        (
            r#""workers": 2"#,
            r#""workers": 0"#,
            &[r#"field "workers""#],
        ),
        (
            r#""workers": 2"#,
            r#""workers": 2, "pipeline": "run-to-completion""#,
            &[r#"field "workers""#, "one thread per port"],
        ),
        (
            r#""workers": 2"#,
            r#""workers": 1, "pipeline": "inline""#,
            &[
                r#"field "pipeline""#,
                "not workers, run-to-completion or queues",
            ],
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
            r#""workers": 2, "addresses": {"network": ["203.0.113.1/24"], "network_mac": "02:00:00:00:00:01"}"#,
            &[r#"field "addresses.network_mac""#, "TUN port"],
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
        (
            r#""workers": 2"#,
            r#""workers": 2, "on_link_loss": "ignore""#,
            &[r#"field "on_link_loss""#, "not exit or wait"],
        ),
        // Without a role the file is not taken for a policy file with
        // strange fields: the error says what is missing.
        (
            r#""role": "gateway", "#,
            "",
            &[
                r#"field "role""#,
                "appliance configuration without \"role\"",
                "\"ports\"",
            ],
        ),
    ];
    // AF_XDP ports exist only in a binary built with the feature af-xdp.
    let without_af_xdp: &[(&str, &str, &[&str])] = &[(
        r#""type": "tun", "name": "tun0""#,
        r#""type": "af_xdp", "interface": "xdp0""#,
        &[
            r#"field "ports.network.type""#,
            "built without AF_XDP ports",
        ],
    )];
    let cases = if cfg!(feature = "af-xdp") {
        cases.to_vec()
    } else {
        [cases, without_af_xdp].concat()
    };
    let path = dir.join("appliance.json");
    std::fs::write(&path, &good).unwrap();
    let (ok, out, err) = check(&path, false);
    assert!(ok, "{err}");
    assert!(out.contains("network port tun tun0"));
    // A TUN port runs in queues on the queues of a multi-queue device.
    let queues = good.replacen(
        r#""workers": 2"#,
        r#""workers": 2, "pipeline": "queues""#,
        1,
    );
    std::fs::write(&path, &queues).unwrap();
    let (ok, _, err) = check(&path, false);
    assert!(ok, "{err}");
    std::fs::write(&path, &good).unwrap();
    let with_addresses = good.replacen(
        r#""workers": 2"#,
        r#""workers": 2, "addresses": {"host": ["192.0.2.1/24", "2001:db8::1/64"], "host_mac": "02:00:00:00:00:01"}"#,
        1,
    );
    std::fs::write(&path, &with_addresses).unwrap();
    let (ok, _, err) = check(&path, false);
    assert!(ok, "{err}");
    assert_refused(&path, &good, &cases);
    for loss in ["exit", "wait"] {
        let text = good.replacen(
            r#""workers": 2"#,
            &format!(r#""workers": 2, "on_link_loss": "{loss}""#),
            1,
        );
        std::fs::write(&path, text).unwrap();
        let (ok, _, err) = check(&path, false);
        assert!(ok, "{loss}: {err}");
    }
    // A policy file's error says the file was taken as one.
    std::fs::write(&path, r#"{"spd": {"outbound": 3}}"#).unwrap();
    let (ok, _, err) = check(&path, false);
    assert!(!ok);
    assert!(
        err.contains("taken as a policy file") && err.contains("no \"role\""),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bad field, as a (text of the good configuration, what it becomes,
/// words the error must hold) case.
type Case<'a> = (&'a str, &'a str, &'a [&'a str]);

/// Each case applied to `good` is refused with an error naming the file
/// and holding the case's words.
fn assert_refused(path: &Path, good: &str, cases: &[Case<'_>]) {
    for (from, to, words) in cases {
        assert!(good.contains(from), "{from}");
        std::fs::write(path, good.replacen(from, to, 1)).unwrap();
        let (ok, _, err) = check(path, false);
        assert!(!ok, "{to}: accepted");
        assert!(
            err.contains(&path.display().to_string()) || err.contains("no-such-policy"),
            "{err}"
        );
        for w in *words {
            assert!(err.contains(w), "{to}: {err:?} lacks {w:?}");
        }
    }
}

#[test]
fn bad_mobility_configs_are_refused_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-check-mob-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("appliance.json");
    let ports = r#""ports": {"host": {"type": "tun", "name": "t0"}, "network": {"type": "tun", "name": "t1"}}"#;
    let ha = format!(
        r#"{{"role": "ha", "policy": "{}", {ports}, "workers": 1,
  "mobility": {{"address": "home_agent_1", "address_v4": "203.0.113.1",
    "home_prefixes": ["2001:db8:1::/64"],
    "nodes": [{{"home": "home_address_1", "home_v4": "home_address_v4_1"}}],
    "ipv4_pool": "192.0.2.200-192.0.2.201", "max_lifetime_secs": 600}}}}"#,
        repo().join("policies/dsmip-hostwide-ha.json").display()
    );
    std::fs::write(&path, &ha).unwrap();
    let (ok, out, err) = check(&path, false);
    assert!(ok, "{err}");
    assert!(out.contains("role ha"), "{out}");
    let ha_cases: &[Case<'_>] = &[
        (
            r#""workers": 1"#,
            r#""workers": 2"#,
            &[r#"field "workers""#, "one worker"],
        ),
        (
            r#""mobility": {"#,
            r#""comment": {"#,
            &[r#"field "mobility""#, "required for role ha"],
        ),
        (
            r#""role": "ha""#,
            r#""role": "gateway""#,
            &[r#"field "mobility""#, "only the mn and ha roles"],
        ),
        (
            r#""role": "ha""#,
            r#""role": "mn""#,
            &[r#"field "mobility.address""#, "unknown field"],
        ),
        (
            r#""address": "home_agent_1""#,
            r#""address": "203.0.113.1""#,
            &[r#"field "mobility.address""#, "not an IPv6 address"],
        ),
        (
            r#""address": "home_agent_1""#,
            r#""address": "home_agent_9""#,
            &[r#"field "mobility.address""#, "named address"],
        ),
        (
            r#""address": "home_agent_1""#,
            r#""address": "2001:db8:9::1""#,
            &[r#"field "mobility.address""#, "home_prefixes"],
        ),
        (
            r#""address": "home_agent_1", "#,
            "",
            &[r#"field "mobility.address""#, "is required"],
        ),
        (
            r#""address_v4": "203.0.113.1""#,
            r#""address_v4": "2001:db8::1""#,
            &[r#"field "mobility.address_v4""#, "IPv4"],
        ),
        (
            r#""address_v4": "203.0.113.1""#,
            r#""address_v4": "255.255.255.255""#,
            &[r#"field "mobility.address_v4""#, "unicast"],
        ),
        (
            r#"["2001:db8:1::/64"]"#,
            r#"["2001:db8:1::"]"#,
            &[r#"field "mobility.home_prefixes[0]""#, "prefix"],
        ),
        (
            r#"["2001:db8:1::/64"]"#,
            r#"["2001:db8:1::/129"]"#,
            &[r#"field "mobility.home_prefixes[0]""#, "from 1 to 128"],
        ),
        (
            r#"["2001:db8:1::/64"]"#,
            "[]",
            &[r#"field "mobility.home_prefixes""#, "is required"],
        ),
        (
            r#"[{"home""#,
            r#"[{"hoem""#,
            &[r#"field "mobility.nodes[0].hoem""#, "unknown field"],
        ),
        (
            r#""home": "home_address_1""#,
            r#""home": "2001:db8:7::1""#,
            &[r#"field "mobility.nodes[0].home""#, "home_prefixes"],
        ),
        (
            r#""home_v4": "home_address_v4_1""#,
            r#""home_v4": "home_address_1""#,
            &[r#"field "mobility.nodes[0].home_v4""#, "IPv4"],
        ),
        (
            r#""nodes": [{"#,
            r#""nodes": [{"home": "home_address_1"}, {"#,
            &[r#"field "mobility.nodes[1].home""#, "twice"],
        ),
        (
            r#""192.0.2.200-192.0.2.201""#,
            r#""192.0.2.201-192.0.2.200""#,
            &[r#"field "mobility.ipv4_pool""#, "upwards"],
        ),
        (
            r#""192.0.2.200-192.0.2.201""#,
            r#""192.0.2.200""#,
            &[r#"field "mobility.ipv4_pool""#, "range"],
        ),
        (
            r#""192.0.2.200-192.0.2.201""#,
            r#"["192.0.2.100"]"#,
            &[r#"field "mobility.ipv4_pool""#, "static home_v4"],
        ),
        (
            r#""192.0.2.200-192.0.2.201""#,
            "[7]",
            &[r#"field "mobility.ipv4_pool[0]""#, "IPv4"],
        ),
        (
            r#""max_lifetime_secs": 600"#,
            r#""max_lifetime_secs": 300000"#,
            &[r#"field "mobility.max_lifetime_secs""#, "from 4 to 262140"],
        ),
        (
            r#""max_lifetime_secs": 600"#,
            r#""max_lifetime_secs": 600, "ipv4_prefix_len": 33"#,
            &[r#"field "mobility.ipv4_prefix_len""#, "from 1 to 32"],
        ),
        (
            r#""max_lifetime_secs": 600"#,
            r#""max_lifetime_secs": 600, "nat_refresh_secs": 0"#,
            &[r#"field "mobility.nat_refresh_secs""#],
        ),
        (
            r#""max_lifetime_secs": 600"#,
            r#""max_lifetime_secs": 600, "force_udp": "yes""#,
            &[r#"field "mobility.force_udp""#, "true or false"],
        ),
        (
            r#""max_lifetime_secs": 600"#,
            r#""max_lifetime_secs": 600, "lifetime_secs": 8"#,
            &[r#"field "mobility.lifetime_secs""#, "unknown field"],
        ),
    ];
    assert_refused(&path, &ha, ha_cases);
    let mn = format!(
        r#"{{"role": "mn", "policy": "{}", {ports}, "workers": 1,
  "mobility": {{"home_address": "home_address_1", "home_agent": "home_agent_1",
    "home_agent_v4": "203.0.113.1", "home_v4": "0.0.0.0", "lifetime_secs": 420,
    "udp_port": 4191, "classifier": "api", "attachment": "2001:db8:2::100"}}}}"#,
        repo().join("policies/dsmip-hostwide-mn.json").display()
    );
    std::fs::write(&path, &mn).unwrap();
    let (ok, out, err) = check(&path, false);
    assert!(ok, "{err}");
    assert!(out.contains("role mn"), "{out}");
    let mn_cases: &[Case<'_>] = &[
        (
            r#""workers": 1"#,
            r#""workers": 4"#,
            &[r#"field "workers""#, "binding state in one worker"],
        ),
        (
            r#""workers": 1"#,
            r#""workers": 1, "pipeline": "run-to-completion""#,
            &[r#"field "pipeline""#, "can not run to completion"],
        ),
        (
            r#""workers": 1"#,
            r#""workers": 1, "pipeline": "queues""#,
            &[r#"field "pipeline""#, "can not run in queues"],
        ),
        (
            r#""home_address": "home_address_1""#,
            r#""home_address": "home_address_v4_1""#,
            &[r#"field "mobility.home_address""#, "IPv6"],
        ),
        (
            r#""home_address": "home_address_1""#,
            r#""home_addr": "home_address_1""#,
            &[r#"field "mobility.home_addr""#, "unknown field"],
        ),
        (
            r#""home_agent": "home_agent_1","#,
            "",
            &[r#"field "mobility.home_agent""#, "is required"],
        ),
        (
            r#""home_agent": "home_agent_1""#,
            r#""home_agent": "home_address_1""#,
            &[r#"field "mobility.home_agent""#, "is the home address"],
        ),
        (
            r#""home_agent_v4": "203.0.113.1""#,
            r#""home_agent_v4": 7"#,
            &[r#"field "mobility.home_agent_v4""#, "must be a string"],
        ),
        (
            r#""home_v4": "0.0.0.0""#,
            r#""home_v4": "224.0.0.1""#,
            &[r#"field "mobility.home_v4""#, "unicast"],
        ),
        (
            r#""lifetime_secs": 420"#,
            r#""lifetime_secs": 422"#,
            &[r#"field "mobility.lifetime_secs""#, "multiple of 4"],
        ),
        (
            r#""lifetime_secs": 420"#,
            r#""lifetime_secs": 262144"#,
            &[r#"field "mobility.lifetime_secs""#, "from 4 to 262140"],
        ),
        (
            r#""lifetime_secs": 420"#,
            r#""lifetime_secs": 0"#,
            &[r#"field "mobility.lifetime_secs""#, "from 4 to 262140"],
        ),
        (
            r#""udp_port": 4191"#,
            r#""udp_port": 0"#,
            &[r#"field "mobility.udp_port""#, "from 1 to 65535"],
        ),
        (
            r#""classifier": "api""#,
            r#""classifier": "guess""#,
            &[r#"field "mobility.classifier""#, "api or heuristic"],
        ),
        (
            r#""attachment": "2001:db8:2::100""#,
            r#""attachment": "elsewhere""#,
            &[r#"field "mobility.attachment""#, "care-of address"],
        ),
        (
            r#""attachment": "2001:db8:2::100""#,
            r#""attachment": "2001:db8:1::100""#,
            &[r#"field "mobility.attachment""#, "is the home address"],
        ),
        (
            r#""attachment": "2001:db8:2::100""#,
            r#""attachment": "ff02::1""#,
            &[r#"field "mobility.attachment""#, "unicast"],
        ),
        (
            r#""home_agent_v4": "203.0.113.1", "home_v4": "0.0.0.0", "lifetime_secs": 420,
    "udp_port": 4191, "classifier": "api", "attachment": "2001:db8:2::100""#,
            r#""attachment": "198.51.100.20""#,
            &[r#"field "mobility.attachment""#, "home_agent_v4"],
        ),
    ];
    assert_refused(&path, &mn, mn_cases);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mobility_example_configs_show_their_settings() {
    let ha = repo().join("examples/configs/ha.json");
    let (ok, out, err) = check(&ha, false);
    assert!(ok, "{err}");
    for w in [
        "role ha",
        "workers 1",
        "mobility:",
        "address            2001:db8:1::1",
        "home_prefixes      2001:db8:1::/64",
        "nodes              home 2001:db8:1::100 home_v4 192.0.2.100",
        "nat_refresh_secs   110",
    ] {
        assert!(out.contains(w), "{w:?} not in\n{out}");
    }
    let (ok, out, err) = check(&ha, true);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let m = &v["appliance"]["mobility"];
    assert_eq!(v["appliance"]["role"], "ha");
    assert_eq!(m["address"], "2001:db8:1::1");
    assert_eq!(m["address_v4"], "203.0.113.1");
    assert_eq!(m["nodes"][0]["home"], "2001:db8:1::100");
    assert_eq!(m["max_lifetime_secs"], 600);
    assert_eq!(m["force_udp"], false);
    let mn = repo().join("examples/configs/mn.json");
    let (ok, out, err) = check(&mn, false);
    assert!(ok, "{err}");
    for w in [
        "role mn",
        "home_address       2001:db8:1::100",
        "home_agent         2001:db8:1::1",
        "home_v4            0.0.0.0",
        "classifier         api",
        "attachment         none",
    ] {
        assert!(out.contains(w), "{w:?} not in\n{out}");
    }
    let (ok, out, err) = check(&mn, true);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let m = &v["appliance"]["mobility"];
    assert_eq!(v["appliance"]["role"], "mn");
    assert_eq!(m["home_agent_v4"], "203.0.113.1");
    assert_eq!(m["lifetime_secs"], 420);
    assert_eq!(m["udp_port"], 4191);
    assert_eq!(m["attachment"], serde_json::Value::Null);
}

#[test]
fn routed_mode_configs_are_checked() {
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-routed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = repo().join("policies/site-to-site-a.json");
    let good = format!(
        r#"{{"role": "gateway", "policy": "{}", "mode": "routed",
  "ports": {{"host": {{"type": "af_packet", "interface": "veth0"}}, "network": {{"type": "af_packet", "interface": "veth1"}}}},
  "addresses": {{"host": ["192.0.2.1/24"], "network": ["203.0.113.1/24", "2001:db8:f::2/64"]}},
  "routes": {{"network": {{"default_via": "203.0.113.254", "v6_default_via": "2001:db8:f::1"}},
              "host": {{"routes": [{{"prefix": "10.1.0.0/16", "via": "192.0.2.2"}}]}}}},
  "workers": 2}}"#,
        policy.display()
    );
    let path = dir.join("routed.json");
    std::fs::write(&path, &good).unwrap();
    let (ok, out, err) = check(&path, false);
    assert!(ok, "{err}");
    for line in [
        "mode routed",
        "route host 192.0.2.0/24 on-link",
        "route host 10.1.0.0/16 via 192.0.2.2",
        "route network 0.0.0.0/0 via 203.0.113.254",
        "route network ::/0 via 2001:db8:f::1",
        "layer2 routed: forwards IP sent to its MAC, passes nothing else; tagged frames dropped",
    ] {
        assert!(out.contains(line), "{line:?} not in {out}");
    }
    let (ok, out, _) = check(&path, true);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["appliance"]["mode"], "routed");
    let cases: &[Case<'_>] = &[
        (
            r#""mode": "routed""#,
            r#""mode": "bridged""#,
            &[r#"field "mode""#, "inline or routed"],
        ),
        (
            r#""type": "af_packet", "interface": "veth1""#,
            r#""type": "tun", "name": "tun1""#,
            &[r#"field "mode""#, "ports.network", "no link layer"],
        ),
        (
            r#""routes": {"#,
            r#""routez": {"#,
            &[r#"field "routez""#, "unknown field"],
        ),
        (
            r#""routes": {"#,
            r#""layer2": {"pass_unknown": true}, "routes": {"#,
            &[r#"field "layer2""#, "inline mode"],
        ),
        (
            r#""host": ["192.0.2.1/24"], "#,
            "",
            &[r#"field "addresses.host""#, "routed mode needs"],
        ),
        (
            r#""default_via": "203.0.113.254""#,
            r#""default_via": "198.51.100.1""#,
            &[r#"field "routes.network.default_via""#, "not on-link"],
        ),
        (
            r#""default_via": "203.0.113.254""#,
            r#""default_via": "2001:db8:f::9""#,
            &[r#"field "routes.network.default_via""#, "not an IPv4"],
        ),
        (
            r#""default_via": "203.0.113.254", "v6_default_via": "2001:db8:f::1""#,
            "",
            &[r#"field "routes.network""#, "default_via"],
        ),
        (
            r#""via": "192.0.2.2""#,
            r#""via": "192.0.2.1""#,
            &[r#"field "routes.host.routes[0].via""#, "appliance's own"],
        ),
        (
            r#""prefix": "10.1.0.0/16""#,
            r#""prefix": "10.1.0.0/40""#,
            &[r#"field "routes.host.routes[0].prefix""#, "0 to 32"],
        ),
        (
            r#""mode": "routed""#,
            r#""mode": "inline""#,
            &[r#"field "routes""#, "routed mode only"],
        ),
    ];
    assert_refused(&path, &good, cases);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn layer2_settings_are_checked_and_passing_unknown_traffic_warns() {
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-layer2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = repo().join("policies/site-to-site-a.json");
    let plain = format!(
        r#"{{"role": "gateway", "policy": "{}",
  "ports": {{"host": {{"type": "af_packet", "interface": "veth0"}}, "network": {{"type": "af_packet", "interface": "veth1"}}}}}}"#,
        policy.display()
    );
    let good = format!(
        "{},\n  {}}}",
        plain.strip_suffix('}').unwrap(),
        r#""layer2": {"allow": ["0x88cc", 35045], "pass_unknown": false}"#
    );
    let path = dir.join("layer2.json");
    // The default: ARP alone passes, no warning.
    std::fs::write(&path, &plain).unwrap();
    let (ok, out, err) = check(&path, false);
    assert!(ok, "{err}");
    assert!(
        out.contains("layer2 passes ARP; drops other non-IP frames"),
        "{out}"
    );
    assert!(!out.contains("warning: layer2"), "{out}");

    std::fs::write(&path, &good).unwrap();
    let (ok, out, err) = check(&path, false);
    assert!(ok, "{err}");
    assert!(
        out.contains("layer2 passes ARP, 0x88cc, 0x88e5; drops other non-IP frames"),
        "{out}"
    );
    assert!(!out.contains("warning: layer2"), "{out}");

    let open = good.replace(r#""pass_unknown": false"#, r#""pass_unknown": true"#);
    std::fs::write(&path, &open).unwrap();
    let (ok, out, err) = check(&path, false);
    assert!(ok, "{err}");
    assert!(out.contains("layer2 passes every non-IP frame"), "{out}");
    assert!(out.contains("warning: layer2.pass_unknown is on"), "{out}");
    let (ok, out, _) = check(&path, true);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["appliance"]["layer2"]["pass_unknown"], true);
    assert_eq!(v["appliance"]["layer2"]["allow"][1], "0x88e5");
    assert!(v["appliance"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("layer2.pass_unknown"));

    let cases: &[Case<'_>] = &[
        (
            r#""0x88cc""#,
            r#""88cc""#,
            &[r#"field "layer2.allow[0]""#, "not an EtherType"],
        ),
        (
            "35045",
            "70000",
            &[r#"field "layer2.allow[1]""#, "not an EtherType"],
        ),
        (
            r#""0x88cc""#,
            r#""0x0800""#,
            &[r#"field "layer2.allow[0]""#, "always goes through the SPD"],
        ),
        (
            r#""0x88cc""#,
            r#""0x8100""#,
            &[r#"field "layer2.allow[0]""#, "VLAN tag"],
        ),
        (
            r#""0x88cc""#,
            "1500",
            &[r#"field "layer2.allow[0]""#, "802.3 length"],
        ),
        (
            r#""pass_unknown": false"#,
            r#""pass_unknown": "yes""#,
            &[r#"field "layer2.pass_unknown""#, "true or false"],
        ),
        (
            r#""pass_unknown": false"#,
            r#""pass_unknwn": true"#,
            &[r#"field "layer2.pass_unknwn""#, "unknown field"],
        ),
        (
            r#""allow": ["0x88cc", 35045]"#,
            r#""allow": "0x88cc""#,
            &[r#"field "layer2.allow""#, "list of EtherTypes"],
        ),
    ];
    assert_refused(&path, &good, cases);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `bitsgw check` of a shipped policy without its opt-in: refused (exit
/// status 2) naming the SA, the transform and the RFC. With the opt-in it
/// passes with a warning; a copy readable only by its owner gets no
/// permission warning, a world-readable one does.
#[test]
fn static_counter_mode_keys_need_the_opt_in_and_key_files_stay_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-check-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = std::fs::read_to_string(repo().join("policies/site-to-site-a.json")).unwrap();
    let path = dir.join("a.json");
    std::fs::write(
        &path,
        shipped.replace("  \"danger_static_keys_for_counter_mode\": true,\n", ""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bitsgw"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        r#"sad[0] "a-to-b-v4""#,
        r#"field "transform""#,
        "aes-gcm-128 with a static key is refused (RFC 4106 section 8.1)",
        "danger_static_keys_for_counter_mode",
    ] {
        assert!(err.contains(want), "{want:?} missing: {err}");
    }
    std::fs::write(&path, &shipped).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, out, err) = check(&path, false);
    assert!(ok, "{err}");
    assert!(
        out.contains("warning:") && out.contains("\"danger_static_keys_for_counter_mode\" is on"),
        "{out}"
    );
    assert!(!out.contains("readable by every user"), "{out}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out, _) = check(&path, false);
    assert!(ok);
    assert!(
        out.contains("holds keys and is readable by every user of this machine (mode 644)"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A key pasted into a field of the appliance configuration is not
/// echoed by `check` (the error shows two characters and the length).
#[test]
fn a_key_in_an_appliance_field_is_not_echoed() {
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-check-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = "0x6b1e2ad09ef0c1c3a6a8b7ef1d0aaf2c5e3d2c1b";
    let good = format!(
        r#"{{"role": "gateway", "policy": "{}",
  "ports": {{"host": {{"type": "af_packet", "interface": "veth0"}}, "network": {{"type": "tun", "name": "tun0"}}}},
  "workers": 2, "mode": "inline"}}"#,
        repo().join("policies/site-to-site-a.json").display()
    );
    let path = dir.join("gw.json");
    for (from, field) in [
        (r#""role": "gateway""#, "role"),
        (r#""mode": "inline""#, "mode"),
        (r#""type": "tun""#, "ports.network.type"),
        (r#""workers": 2"#, "state_dir"),
    ] {
        let bad = if field == "state_dir" {
            good.replacen(from, &format!(r#"{from}, "state_dir": "{key}""#), 1)
        } else {
            let (name, _) = from.split_once(':').unwrap();
            good.replacen(from, &format!(r#"{name}: "{key}""#), 1)
        };
        std::fs::write(&path, bad).unwrap();
        let (ok, _, err) = check(&path, false);
        assert!(!ok);
        assert!(err.contains(&format!("field \"{field}\"")), "{err}");
        assert!(!err.contains(&key[4..]), "{field}: key echoed: {err}");
        assert!(err.contains("(42 characters, masked"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ike_keyed_sas_check_and_an_unused_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("bitsgw-check-ike-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = |extra: &str| {
        format!(
            r#"{{"spd": {{"outbound": [{{"name": "o", "local": "192.0.2.0/24", "remote": "198.51.100.0/24", "action": "protect", "sa": "out"}}],
              "inbound": [{{"name": "i", "local": "192.0.2.0/24", "remote": "198.51.100.0/24", "action": "protect", "sa": "in"}}]}},
              "sad": [{{"name": "out", "direction": "outbound", "keyed_by": "ike", "tunnel": {{"local": "203.0.113.1", "remote": "203.0.113.2"}}}},
                      {{"name": "in", "direction": "inbound", "keyed_by": "ike", "tunnel": {{"local": "203.0.113.1", "remote": "203.0.113.2"}}}}{extra}]}}"#
        )
    };
    let file = dir.join("ike.json");
    std::fs::write(&file, policy("")).unwrap();
    let (ok, out, err) = check(&file, false);
    assert!(ok, "{err}");
    assert!(
        out.contains("out outbound esp tunnel 203.0.113.1 -> 203.0.113.2, keyed by IKE"),
        "{out}"
    );
    let (ok, out, _) = check(&file, true);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sad"][0]["keyed_by"], "ike", "{v}");
    std::fs::write(
        &file,
        policy(r#", {"name": "spare", "direction": "inbound", "keyed_by": "ike", "mode": "transport"}"#),
    )
    .unwrap();
    let (ok, _, err) = check(&file, false);
    assert!(!ok);
    assert!(
        err.contains("ike.json: sad \"spare\": field \"name\": no inbound SPD entry protects with this IKE-keyed SA"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_queues_pipeline_checks_and_says_so() {
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-queues-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("queues.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"role": "gateway", "policy": "{}",
  "ports": {{"host": {{"type": "af_packet", "interface": "veth0"}}, "network": {{"type": "af_packet", "interface": "veth1"}}}},
  "workers": 2, "pipeline": "queues"}}"#,
            repo().join("policies/site-to-site-a.json").display()
        ),
    )
    .unwrap();
    let (ok, out, err) = check(&path, false);
    assert!(ok, "{err}");
    assert!(out.contains("pipeline queues: 2"), "{out}");
    let (ok, out, err) = check(&path, true);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["appliance"]["pipeline"], "queues", "{v}");
    assert_eq!(v["appliance"]["workers"], 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn remote_any_peers_only_respond_and_share_their_endpoint_s_proposals() {
    let dir = std::env::temp_dir().join(format!("bitsgw-check-any-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sa = |name: &str, direction: &str, mn: &str| {
        format!(
            r#"{{"name": "{name}", "direction": "{direction}", "keyed_by": "ike", "tunnel": {{"local": "203.0.113.1", "remote": "203.0.113.{mn}"}}}}"#
        )
    };
    let entry = |name: &str, mn: &str| {
        format!(
            r#"{{"name": "{name}{mn}", "local": "192.0.2.0/24", "remote": "198.51.100.{mn}/32", "action": "protect", "sa": "{name}{mn}"}}"#
        )
    };
    let policy = format!(
        r#"{{"spd": {{"outbound": [{}, {}], "inbound": [{}, {}]}}, "sad": [{}, {}, {}, {}]}}"#,
        entry("out", "100"),
        entry("out", "200"),
        entry("in", "100"),
        entry("in", "200"),
        sa("out100", "outbound", "100"),
        sa("in100", "inbound", "100"),
        sa("out200", "outbound", "200"),
        sa("in200", "inbound", "200"),
    );
    std::fs::write(dir.join("p.json"), policy).unwrap();
    for mn in ["mn1", "mn2"] {
        let psk = dir.join(format!("{mn}.psk"));
        std::fs::write(&psk, format!("{mn} key of sixteen or more octets\n")).unwrap();
        std::fs::set_permissions(&psk, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    let peer = |mn: &str, n: &str| {
        format!(
            r#"{{"name": "{mn}", "local": "203.0.113.1", "remote": "any",
              "local_id": "fqdn:ha.example", "remote_id": "fqdn:{mn}.example", "psk_file": "{mn}.psk",
              "ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "esp_proposals": ["aes128gcm16"],
              "start": "respond", "children": [{{"outbound": "out{n}", "inbound": "in{n}"}}]}}"#
        )
    };
    let good = format!(
        r#"{{"role": "gateway", "policy": "p.json",
  "ports": {{"host": {{"type": "af_packet", "interface": "h"}}, "network": {{"type": "af_packet", "interface": "n"}}}},
  "addresses": {{"network": ["203.0.113.1/24"]}},
  "peers": [{}, {}]}}"#,
        peer("mn1", "100"),
        peer("mn2", "200")
    );
    let path = dir.join("any.json");
    std::fs::write(&path, &good).unwrap();
    let (ok, _, err) = check(&path, false);
    assert!(ok, "{err}");
    let respond = r#""start": "respond""#;
    let mn2_id = r#""remote_id": "fqdn:mn2.example""#;
    let mn2_ike = r#""ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "esp_proposals": ["aes128gcm16"],
              "start": "respond", "children": [{"outbound": "out200""#;
    assert_refused(
        &path,
        &good,
        &[
            (
                respond,
                r#""start": "initiate""#,
                &[r#"peers[0] "mn1""#, r#"field "start""#, "only responds"],
            ),
            (
                respond,
                r#""start": "trap""#,
                &[r#"peers[0] "mn1""#, r#"field "start""#, "only responds"],
            ),
            (
                mn2_id,
                r#""remote_id": "fqdn:mn1.example""#,
                &[
                    r#"peers[1] "mn2""#,
                    r#"field "remote_id""#,
                    "same identities",
                ],
            ),
            (
                mn2_ike,
                &mn2_ike.replace("ecp256", "x25519"),
                &[r#"peers[1] "mn2""#, r#"field "ike_proposals""#, "\"mn1\""],
            ),
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `danger_wireshark_keys_file` is shown by `check` with a warning (text
/// and JSON), and one that group or others may read is refused.
#[test]
fn a_wireshark_keys_file_is_warned_about_and_kept_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-wskeys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = repo().join("policies/site-to-site-a.json");
    let path = dir.join("keys.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"role": "gateway", "policy": "{}", "danger_wireshark_keys_file": "lab.esp_sa",
  "ports": {{"host": {{"type": "af_packet", "interface": "veth0"}}, "network": {{"type": "af_packet", "interface": "veth1"}}}}}}"#,
            policy.display()
        ),
    )
    .unwrap();
    let keys = dir.join("lab.esp_sa");
    let (ok, out, err) = check(&path, false);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!(
            "warning: danger_wireshark_keys_file is {}",
            keys.display()
        )),
        "{out}"
    );
    let (ok, out, _) = check(&path, true);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["appliance"]["wireshark_keys_file"],
        keys.display().to_string(),
        "{v}"
    );
    assert!(
        v["appliance"]["warnings"]
            .to_string()
            .contains("danger_wireshark_keys_file"),
        "{v}"
    );
    std::fs::write(&keys, "").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, err) = check(&path, false);
    assert!(!ok);
    assert!(
        err.contains("keys.json")
            && err.contains(r#"field "danger_wireshark_keys_file""#)
            && err.contains("mode 644"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
