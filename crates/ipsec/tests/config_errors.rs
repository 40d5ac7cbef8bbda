//! Bad policy files get an error that names the file, the entry and the
//! field, and says what is wrong.
#![allow(clippy::unwrap_used)]

use bitsgw_ipsec::config::parse_policy;

const GOOD: &str = r#"{
  "danger_static_keys_for_counter_mode": true,
  "addresses": {"home_address_1": "2001:db8:1::100", "home_agent_1": "2001:db8:1::1"},
  "spd": {
    "outbound": [
      {"name": "bu", "local": "home_address_1", "remote": "home_agent_1", "proto": "mh", "mh_type": "bu", "action": "protect", "sa": "sa1"},
      {"name": "payload", "local": "home_address_1", "action": "protect", "sa": "sa3"},
      {"name": "rest", "action": "discard"}
    ],
    "inbound": [
      {"name": "ba", "local": "home_address_1", "remote": "home_agent_1", "proto": "mh", "mh_type": "ba", "action": "protect", "sa": "sa2"},
      {"name": "rest", "action": "discard"}
    ]
  },
  "sad": [
    {"name": "sa1", "direction": "outbound", "spi": "0x1001", "mode": "transport", "transform": "aes-gcm-128",
     "enc_key": "0x00112233445566778899aabbccddeeff01020304"},
    {"name": "sa2", "direction": "inbound", "spi": "0x1002", "mode": "transport", "transform": "aes-cbc-128-hmac-sha256",
     "enc_key": "0x00112233445566778899aabbccddeeff", "auth_key": "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
    {"name": "sa3", "direction": "outbound", "spi": "0x1003", "mode": "tunnel",
     "tunnel": {"local": "home_address_1", "remote": "home_agent_1"}, "transform": "aes-gcm-256",
     "enc_key": "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff01020304"}
  ]
}"#;

#[test]
fn the_good_file_loads() {
    let set = parse_policy(GOOD, "mn.json").unwrap();
    assert_eq!(
        (set.outbound.len(), set.inbound.len(), set.sas.len()),
        (3, 2, 3)
    );
}

/// No backend named: `auto`; a named one is kept.
#[test]
fn the_backend_is_auto_unless_named() {
    use bitsgw_ipsec::crypto::GcmBackend;
    use bitsgw_ipsec::gcm_choice::BackendSetting;
    let set = parse_policy(GOOD, "mn.json").unwrap();
    assert_eq!(set.sas[0].backend, BackendSetting::Auto);
    let named = GOOD.replace(
        r#""transform": "aes-gcm-128","#,
        r#""transform": "aes-gcm-128", "backend": "rustcrypto","#,
    );
    let set = parse_policy(&named, "mn.json").unwrap();
    assert_eq!(
        set.sas[0].backend,
        BackendSetting::Fixed(GcmBackend::RustCrypto)
    );
}

#[test]
fn bad_files_are_refused_with_file_entry_and_field() {
    // (what is wrong, text to replace, replacement, words the error must contain)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "unknown GCM backend",
            r#""transform": "aes-gcm-128","#,
            r#""transform": "aes-gcm-128", "backend": "openssl","#,
            &[
                r#"sad[0] "sa1""#,
                r#"field "backend""#,
                "is not auto, ring or rustcrypto",
            ],
        ),
        (
            "unknown SA name",
            r#""sa": "sa3""#,
            r#""sa": "sa9""#,
            &[
                r#"spd.outbound[1] "payload""#,
                r#"field "sa""#,
                "unknown SA name \"sa9\"",
            ],
        ),
        (
            "key of the wrong length",
            "0x00112233445566778899aabbccddeeff01020304",
            "0x0011",
            &[
                r#"sad[0] "sa1""#,
                r#"field "enc_key""#,
                "20-byte key",
                "2 bytes",
            ],
        ),
        (
            "auth key missing",
            r#", "auth_key": "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff""#,
            "",
            &[r#"sad[1] "sa2""#, r#"field "auth_key""#, "32-byte key"],
        ),
        (
            "key not hex",
            "0x00112233445566778899aabbccddeeff01020304",
            "0x0011223344556677889zaabbccddeeff01020304",
            &[r#"sad[0] "sa1""#, "not hexadecimal"],
        ),
        (
            "SPI reused",
            r#""spi": "0x1003""#,
            r#""spi": "0x1001""#,
            &[
                r#"sad[2] "sa3""#,
                r#"field "spi""#,
                "already used by sad[0] \"sa1\"",
            ],
        ),
        (
            "reserved SPI",
            r#""spi": "0x1001""#,
            r#""spi": 200"#,
            &[r#"sad[0] "sa1""#, r#"field "spi""#, "reserved"],
        ),
        (
            "entry that can never match",
            r#"{"name": "payload", "local": "home_address_1""#,
            r#"{"name": "payload", "local": "home_address_1", "action": "bypass"}, {"name": "late", "local": "home_address_1", "proto": "tcp""#,
            &[
                r#"spd.outbound[2] "late""#,
                "can never match",
                "entry 1 \"payload\"",
            ],
        ),
        (
            "transport mode between non-endpoints",
            r#""mode": "transport", "transform": "aes-gcm-128""#,
            r#""mode": "transport", "transform": "aes-gcm-128""#,
            &[],
        ),
        (
            "transport SA on a prefix",
            r#""local": "home_address_1", "remote": "home_agent_1", "proto": "mh", "mh_type": "bu""#,
            r#""local": "2001:db8:1::/64", "remote": "home_agent_1", "proto": "mh", "mh_type": "bu""#,
            &[
                r#"spd.outbound[0] "bu""#,
                r#"field "local""#,
                "transport mode",
            ],
        ),
        (
            "unknown named address",
            r#""remote": "home_agent_1", "proto": "mh", "mh_type": "bu""#,
            r#""remote": "home_agent_2", "proto": "mh", "mh_type": "bu""#,
            &[
                r#"spd.outbound[0] "bu""#,
                r#"field "remote""#,
                "home_agent_2",
            ],
        ),
        (
            "misspelt field",
            r#""mh_type": "bu""#,
            r#""mhtype": "bu""#,
            &[
                r#"spd.outbound[0] "bu""#,
                r#"field "mhtype""#,
                "unknown field",
            ],
        ),
        (
            "MH type without MH",
            r#""proto": "mh", "mh_type": "bu""#,
            r#""proto": "tcp", "mh_type": "bu""#,
            &[r#"field "mh_type""#, "needs \"proto\": \"mh\""],
        ),
        (
            "unknown MH type name",
            r#""mh_type": "bu""#,
            r#""mh_type": "bux""#,
            &[r#"field "mh_type""#, "bux"],
        ),
        (
            "unknown transform",
            r#""transform": "aes-gcm-256""#,
            r#""transform": "aes-ccm""#,
            &[
                r#"sad[2] "sa3""#,
                r#"field "transform""#,
                "unknown transform",
            ],
        ),
        (
            "SA of the wrong direction",
            r#""action": "protect", "sa": "sa2""#,
            r#""action": "protect", "sa": "sa1""#,
            &[r#"spd.inbound[0] "ba""#, r#"field "sa""#, "outbound"],
        ),
        (
            "tunnel without endpoints",
            r#""tunnel": {"local": "home_address_1", "remote": "home_agent_1"}, "#,
            "",
            &[
                r#"sad[2] "sa3""#,
                r#"field "tunnel""#,
                "needs tunnel endpoints",
            ],
        ),
        (
            "mixed-family tunnel",
            r#""remote": "home_agent_1"}"#,
            r#""remote": "192.0.2.1"}"#,
            &[r#"field "tunnel.remote""#, "one address family"],
        ),
        (
            "bad action",
            r#"{"name": "rest", "action": "discard"}"#,
            r#"{"name": "rest", "action": "drop"}"#,
            &[r#"spd.outbound[2] "rest""#, r#"field "action""#, "\"drop\""],
        ),
        (
            "port range upside down",
            r#"{"name": "rest", "action": "discard"}"#,
            r#"{"name": "rest", "proto": "udp", "local_port": "900-800", "action": "discard"}"#,
            &[r#"field "local_port""#, "range is empty"],
        ),
        (
            "inbound SA no entry uses",
            r#""action": "protect", "sa": "sa2""#,
            r#""action": "discard""#,
            &[r#"sad[1] "sa2""#, "no inbound SPD entry"],
        ),
        (
            "soft above hard",
            r#""mode": "tunnel","#,
            r#""mode": "tunnel", "lifetime": {"soft": {"seconds": 100}, "hard": {"seconds": 50}},"#,
            &[r#"field "lifetime.soft.seconds""#],
        ),
        (
            "duplicate entry name",
            r#"{"name": "payload""#,
            r#"{"name": "bu""#,
            &[r#"spd.outbound[1] "bu""#, "another entry"],
        ),
        (
            "not JSON",
            r#""sad": ["#,
            r#""sad": [[["#,
            &["not valid JSON", "line"],
        ),
        (
            "replay window too large",
            r#""mode": "transport", "transform": "aes-gcm-128""#,
            r#""mode": "transport", "replay_window": 100000, "transform": "aes-gcm-128""#,
            &[r#"field "replay_window""#],
        ),
    ];
    for (what, from, to, words) in cases {
        assert!(GOOD.contains(from), "{what}: fixture text not found");
        let text = GOOD.replacen(from, to, 1);
        if words.is_empty() {
            continue; // documents that this shape is legal
        }
        let err = parse_policy(&text, "mn.json").expect_err(what).to_string();
        assert!(err.starts_with("mn.json: "), "{what}: {err}");
        for w in *words {
            assert!(err.contains(w), "{what}: error {err:?} lacks {w:?}");
        }
    }
}

#[test]
fn keys_never_appear_in_errors_or_debug_output() {
    let set = parse_policy(GOOD, "mn.json").unwrap();
    let dbg = format!("{set:?}");
    for key in ["00112233445566778899aabbccddeeff", "0, 17, 34, 51"] {
        assert!(!dbg.contains(key), "key material in Debug output");
    }
    let text = GOOD.replacen("\"spi\": \"0x1003\"", "\"spi\": \"0x1001\"", 1);
    let err = parse_policy(&text, "mn.json").unwrap_err().to_string();
    assert!(!err.contains("00112233"));
}

#[test]
fn a_key_given_twice_is_refused_where_it_is() {
    // The catch-all DISCARD that a second "action" would have made BYPASS.
    let text = GOOD.replace(
        r#"{"name": "rest", "action": "discard"}
    ],
    "inbound""#,
        r#"{"name": "rest", "action": "discard", "action": "bypass"}
    ],
    "inbound""#,
    );
    assert_ne!(text, GOOD);
    let e = parse_policy(&text, "mn.json").unwrap_err().to_string();
    assert!(e.starts_with("mn.json: "), "{e}");
    assert!(
        e.contains(r#"key "action" appears twice in one object"#),
        "{e}"
    );
    let line = 1 + text[..text.find(r#""action": "bypass"}"#).unwrap()]
        .matches('\n')
        .count();
    assert!(e.contains(&format!("line {line},")), "{e}");
    // Anywhere in the file: the top level, an SA, an object in an object.
    for (from, to) in [
        (r#""spd": {"#, r#""comment": "a", "comment": "b", "spd": {"#),
        (
            r#""mode": "transport", "transform""#,
            r#""mode": "transport", "mode": "tunnel", "transform""#,
        ),
        (
            r#"{"local": "home_address_1", "remote": "home_agent_1"}"#,
            r#"{"local": "home_address_1", "remote": "home_agent_1", "local": "home_agent_1"}"#,
        ),
    ] {
        let text = GOOD.replacen(from, to, 1);
        assert_ne!(text, GOOD, "{from}");
        let e = parse_policy(&text, "mn.json").unwrap_err().to_string();
        assert!(e.contains("appears twice in one object"), "{e}");
    }
    // The same key in two objects is fine.
    assert!(parse_policy(GOOD, "mn.json").is_ok());
}

/// GOOD without its opt-in.
fn without_opt_in() -> String {
    GOOD.replace("  \"danger_static_keys_for_counter_mode\": true,\n", "")
}

/// RFC 4106 8.1, RFC 4543 8 and RFC 7634 4 forbid the counter-mode
/// transforms with static keys: by default the first such SA is refused,
/// and the error names the SA, the transform, the RFC and the ways out.
#[test]
fn counter_mode_with_static_keys_is_refused_by_default() {
    let e = parse_policy(&without_opt_in(), "mn.json").unwrap_err();
    let text = e.to_string();
    for want in [
        "mn.json",
        r#"sad[0] "sa1""#,
        r#"field "transform""#,
        "aes-gcm-128 with a static key is refused (RFC 4106 section 8.1)",
        "IKEv2",
        "aes-cbc-128-hmac-sha256",
        r#""danger_static_keys_for_counter_mode": true"#,
    ] {
        assert!(text.contains(want), "{want:?} missing from: {text}");
    }
    for (transform, key, rfc) in [
        (
            "chacha20-poly1305",
            "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff01020304",
            "RFC 7634",
        ),
        (
            "aes-gmac-128",
            "0x00112233445566778899aabbccddeeff01020304",
            "RFC 4543",
        ),
    ] {
        let text = without_opt_in().replacen(
            r#""transform": "aes-gcm-128",
     "enc_key": "0x00112233445566778899aabbccddeeff01020304""#,
            &format!(r#""transform": "{transform}", "enc_key": "{key}""#),
            1,
        );
        let e = parse_policy(&text, "mn.json").unwrap_err().to_string();
        assert!(e.contains(transform) && e.contains(rfc), "{e}");
    }
    // The same file with CBC+HMAC only loads without the opt-in.
    let cbc = without_opt_in()
        .replace(
            r#""transform": "aes-gcm-128",
     "enc_key": "0x00112233445566778899aabbccddeeff01020304""#,
            r#""transform": "aes-cbc-128-hmac-sha256", "enc_key": "0x0f112233445566778899aabbccddeeff", "auth_key": "0x0f112233445566778899aabbccddeeff00112233445566778899aabbccddeeff""#,
        )
        .replace(
            r#""transform": "aes-gcm-256",
     "enc_key": "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff01020304""#,
            r#""transform": "null-hmac-sha256", "auth_key": "0x1f112233445566778899aabbccddeeff00112233445566778899aabbccddeeff""#,
        );
    let set = parse_policy(&cbc, "mn.json").unwrap();
    assert!(!set.danger_static_keys_for_counter_mode);
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
}

/// The opt-in allows them, and says so in a warning that `check` prints.
#[test]
fn the_opt_in_allows_counter_mode_with_a_warning() {
    let set = parse_policy(GOOD, "mn.json").unwrap();
    assert!(set.danger_static_keys_for_counter_mode);
    let w = set.warnings.join("\n");
    assert!(
        w.contains("danger_static_keys_for_counter_mode") && w.contains("\"sa1\", \"sa3\""),
        "{w}"
    );
    let e = parse_policy(
        &GOOD.replace(
            "\"danger_static_keys_for_counter_mode\": true",
            "\"danger_static_keys_for_counter_mode\": \"yes\"",
        ),
        "mn.json",
    )
    .unwrap_err();
    assert!(e
        .to_string()
        .contains(r#"field "danger_static_keys_for_counter_mode": must be true or false"#));
}

/// One key (with its salt) on two SAs, in either key field, is refused;
/// so is a key of zeros (with any salt).
#[test]
fn shared_and_zero_keys_are_refused() {
    let shared = GOOD.replace(
        "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff01020304",
        "0x00112233445566778899aabbccddeeff0011223344556677889900112233445501020304",
    );
    parse_policy(&shared, "mn.json").unwrap();
    // sa3's enc_key made equal to sa1's (both 20 bytes with aes-gcm-128).
    let shared = GOOD.replace(
        r#""transform": "aes-gcm-256",
     "enc_key": "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff01020304""#,
        r#""transform": "aes-gcm-128", "enc_key": "0x00112233445566778899aabbccddeeff01020304""#,
    );
    let e = parse_policy(&shared, "mn.json").unwrap_err().to_string();
    assert!(
        e.contains(r#"sad[2] "sa3""#)
            && e.contains(r#"field "enc_key""#)
            && e.contains(r#"also a key of sad[0] "sa1""#),
        "{e}"
    );
    // sa2's auth key used as sa3's... key of another SA in the other field.
    let cross = GOOD.replace(
        r#""transform": "aes-gcm-256",
     "enc_key": "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff01020304""#,
        r#""transform": "null-hmac-sha256", "auth_key": "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff""#,
    );
    let e = parse_policy(&cross, "mn.json").unwrap_err().to_string();
    assert!(
        e.contains(r#"field "auth_key""#) && e.contains(r#"sad[1] "sa2""#),
        "{e}"
    );
    let zero = GOOD.replace(
        "0x00112233445566778899aabbccddeeff01020304",
        "0x0000000000000000000000000000000001020304",
    );
    let e = parse_policy(&zero, "mn.json").unwrap_err().to_string();
    assert!(
        e.contains(r#"sad[0] "sa1""#) && e.contains("all zeros"),
        "{e}"
    );
}

/// A key pasted into another field is never echoed in full, whichever
/// field it lands in.
#[test]
fn a_key_in_the_wrong_field_is_not_echoed() {
    let key = "0x00112233445566778899aabbccddeeff01020304";
    let secret = &key[4..];
    for (from, field) in [
        (r#""spi": "0x1001""#, "spi"),
        (r#""mode": "transport", "transform": "aes-gcm-128""#, "mode"),
        (r#""transform": "aes-gcm-256""#, "transform"),
        (r#""direction": "outbound", "spi": "0x1001""#, "direction"),
        (r#""remote": "home_agent_1"}, "transform""#, "tunnel.remote"),
    ] {
        let to = match field {
            "spi" => format!(r#""spi": "{key}""#),
            "mode" => format!(r#""mode": "{key}", "transform": "aes-gcm-128""#),
            "transform" => format!(r#""transform": "{key}""#),
            "direction" => format!(r#""direction": "{key}", "spi": "0x1001""#),
            _ => format!(r#""remote": "{key}"}}, "transform""#),
        };
        let text = GOOD.replacen(from, &to, 1);
        assert_ne!(text, GOOD, "{field}");
        let e = parse_policy(&text, "mn.json").unwrap_err().to_string();
        assert!(e.contains(&format!("field \"{field}\"")), "{e}");
        assert!(!e.contains(secret), "{field}: the key is echoed: {e}");
        assert!(e.contains("\"0x...\" (42 characters, masked"), "{e}");
        assert!(
            !parse_policy(&text, "mn.json")
                .unwrap_err()
                .problem
                .contains("0011"),
            "{e}"
        );
    }
    // A base64 key too.
    let b64 = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEg==";
    let e = parse_policy(
        &GOOD.replacen("\"transport\"", &format!("\"{b64}\""), 1),
        "mn.json",
    )
    .unwrap_err()
    .to_string();
    assert!(
        !e.contains(&b64[2..]) && e.contains("(40 characters, masked"),
        "{e}"
    );
    // Short values, and paths and names, are shown as they are.
    for plain in ["/var/lib/bitsgw/ha", "home_agent_address_1"] {
        assert_eq!(
            bitsgw_ipsec::config::Shown(plain).to_string(),
            format!("\"{plain}\"")
        );
    }
    let e = parse_policy(&GOOD.replacen("\"transport\"", "\"tunel\"", 1), "mn.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains(r#""tunel" is not transport or tunnel"#), "{e}");
}

/// A bundle is owned by one worker as a whole, so two bundles may not
/// share an SA: the file is refused, naming both entries and the SA.
#[test]
fn an_sa_in_two_bundles_is_refused() {
    let text = GOOD
        .replace(
            r#""mh_type": "bu", "action": "protect", "sa": "sa1"},"#,
            r#""mh_type": "bu", "action": "protect", "sa": ["sa1", "sa3"]},
      {"name": "bu2", "local": "home_address_1", "remote": "home_agent_1", "proto": "udp", "action": "protect", "sa": ["sa3", "sa1"]},"#,
        );
    let err = parse_policy(&text, "mn.json").unwrap_err().to_string();
    for words in [
        "mn.json",
        r#"spd.outbound[1] "bu2""#,
        r#"field "sa""#,
        r#"SA "sa3" is also in the bundle of spd.outbound[0] "bu""#,
    ] {
        assert!(err.contains(words), "{err} lacks {words}");
    }
    // The same bundle twice is one bundle: it loads.
    let same = GOOD.replace(
        r#""mh_type": "bu", "action": "protect", "sa": "sa1"},"#,
        r#""mh_type": "bu", "action": "protect", "sa": ["sa1", "sa3"]},
      {"name": "bu2", "local": "home_address_1", "remote": "home_agent_1", "proto": "udp", "action": "protect", "sa": ["sa1", "sa3"]},"#,
    );
    parse_policy(&same, "mn.json").unwrap();
}

/// An SA that a reload keeps must keep its owner: a new bundle around it
/// is an owner change, which the appliance refuses.
#[test]
fn a_bundle_change_is_an_owner_change() {
    let old = parse_policy(GOOD, "mn.json").unwrap();
    assert_eq!(old.ownership_anchor("sa3"), "sa3");
    assert!(old.owner_changes(&old).is_none());
    let bundled = GOOD.replace(
        r#""mh_type": "bu", "action": "protect", "sa": "sa1"},"#,
        r#""mh_type": "bu", "action": "protect", "sa": ["sa1", "sa3"]},"#,
    );
    let new = parse_policy(&bundled, "mn.json").unwrap();
    assert_eq!(new.ownership_anchor("sa3"), "sa1");
    assert_eq!(new.ownership_anchor("sa1"), "sa1");
    assert_eq!(new.owner_changes(&old), Some(("sa3", "sa3", "sa1")));
}

/// Values of the wrong shape, missing and unknown fields are refused at
/// their path within the entry, nested objects included, and never
/// echoed: a string found where an object or a number belongs could be a
/// key.
#[test]
fn wrong_shapes_name_the_path_and_mask_the_value() {
    let key = "0x00112233445566778899aabbccddeeff01020304";
    let cases: &[(&str, &str, &[&str])] = &[
        (
            r#""mode": "tunnel","#,
            r#""mode": "tunnel", "lifetime": {"soft": {"seconds": true}},"#,
            &[
                r#"sad[2] "sa3""#,
                r#"field "lifetime.soft.seconds""#,
                "must be a number",
            ],
        ),
        (
            r#""mode": "tunnel","#,
            r#""mode": "tunnel", "udp_encap": "KEY","#,
            &[
                r#"sad[2] "sa3""#,
                r#"field "udp_encap""#,
                "must be an object",
            ],
        ),
        (
            r#""mode": "tunnel","#,
            r#""mode": "tunnel", "esn": "KEY","#,
            &[r#"field "esn""#, "must be true or false"],
        ),
        (
            r#"{"local": "home_address_1", "remote": "home_agent_1"}"#,
            r#"{"local": "home_address_1", "remote": "home_agent_1", "locl": 1}"#,
            &[r#"sad[2] "sa3""#, r#"field "tunnel.locl""#, "unknown field"],
        ),
        (
            r#"{"name": "rest", "action": "discard"}"#,
            r#"{"action": "discard"}"#,
            &[r#"spd.outbound[2] """#, r#"field "name""#, "is required"],
        ),
        (
            r#""sa": "sa3""#,
            r#""sa": ["KEY"]"#,
            &[
                r#"spd.outbound[1] "payload""#,
                r#"field "sa""#,
                "unknown SA name",
            ],
        ),
        (
            r#""sa": "sa3""#,
            r#""sa": [1]"#,
            &[
                r#"spd.outbound[1] "payload""#,
                r#"field "sa""#,
                "must list SA names",
            ],
        ),
        (
            r#""sad": ["#,
            r#""sad": "KEY", "x": ["#,
            &[r#"top level: field "sad""#, "must be a list of SAs"],
        ),
        (
            r#""inbound": ["#,
            r#""outbound2": "KEY", "inbound": ["#,
            &[r#"spd: field "outbound2""#, "unknown field"],
        ),
        (
            r#""home_agent_1": "2001:db8:1::1""#,
            r#""home_agent_1": 7"#,
            &[r#"addresses: field "home_agent_1""#, "must be a string"],
        ),
    ];
    for (from, to, words) in cases {
        assert!(GOOD.contains(from), "fixture text {from:?} not found");
        let text = GOOD.replacen(from, &to.replace("KEY", key), 1);
        let e = parse_policy(&text, "mn.json").unwrap_err().to_string();
        assert!(e.starts_with("mn.json: "), "{e}");
        assert!(!e.contains(&key[4..]), "the key is echoed: {e}");
        for w in *words {
            assert!(e.contains(w), "error {e:?} lacks {w:?}");
        }
    }
}
