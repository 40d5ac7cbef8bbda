//! Keys never leak: every key configured in `policies/*.json` and
//! `examples/configs/*.json` is looked for in everything the program
//! writes, and must not be found, neither whole nor as any 8-byte piece of
//! it, in hex (any case, with or without 0x) or as raw bytes:
//!
//! - `bitsgw check` (text and `--json`) on every file, and on copies whose
//!   keys are written `0x..`, `0X..`, without prefix, in upper and lower
//!   case;
//! - the errors for keys of the wrong length, odd or non-hex digits, and
//!   for a key that is not a string;
//! - `bitsgw replay` (stdout, stderr with trace-level logs, text and JSON)
//!   and every capture it writes: the `--out` ports and the `--trace` stage
//!   boundaries, cleartext ones included, with traffic each policy's peer
//!   protected so that SAs of every policy encrypt and decrypt;
//! - `Debug` of the parsed policies, of a stage and a gateway holding them;
//! - against a running appliance (needs root: a network namespace with TUN
//!   ports): `show sa|sp|counters`, text and `--json`, `ctl reload` and
//!   `ctl remove-sa`, its logs at trace level and its final counters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bitsgw_io::pcap::PcapWriter;
use bitsgw_io::LinkType;
use bitsgw_ipsec::config::parse_policy;
use bitsgw_ipsec::{Disposition, IpsecStage, StageConfig};
use bitsgw_pipeline::Gateway;
use bitsgw_wire::craft::{ip_packet, mh_packet, udp_packet};
use bitsgw_wire::{PacketBuf, Timestamp};
use common::{wait_for, Lab};
use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The policy files, each with the one it interoperates with.
const PAIRS: &[(&str, &str)] = &[
    ("rfc3776-mn.json", "rfc3776-ha.json"),
    ("rfc3776-ha.json", "rfc3776-mn.json"),
    ("dsmip-hostwide-mn.json", "dsmip-hostwide-ha.json"),
    ("dsmip-hostwide-ha.json", "dsmip-hostwide-mn.json"),
    ("site-to-site-a.json", "site-to-site-b.json"),
    ("site-to-site-b.json", "site-to-site-a.json"),
];

/// The policy files that configure keys (those whose SAs are all keyed by
/// IKEv2 have none to leak).
fn policy_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            json(p)["sad"]
                .as_array()
                .is_some_and(|sas| sas.iter().any(|sa| sa.get("enc_key").is_some()))
        })
        .collect();
    v.sort();
    v
}

fn example_configs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every key configured anywhere, as raw bytes.
fn all_keys() -> Vec<Vec<u8>> {
    let mut files = policy_files();
    for c in example_configs() {
        let v = json(&c);
        if let Some(p) = v["policy"].as_str() {
            files.push(c.parent().unwrap().join(p));
        }
    }
    let mut keys = Vec::new();
    for f in files {
        for sa in json(&f)["sad"].as_array().unwrap() {
            for k in ["enc_key", "auth_key"] {
                if let Some(s) = sa[k].as_str() {
                    let hex = s.trim_start_matches("0x").trim_start_matches("0X");
                    keys.push(hex::decode(hex).unwrap());
                }
            }
        }
    }
    keys.sort();
    keys.dedup();
    assert!(keys.len() >= 20, "{} keys", keys.len());
    keys
}

/// Looks for every key, and every 8-byte piece of one, in `data`: as hex
/// text in any case, and as raw bytes. Panics naming `what` on a find.
struct Leaks {
    hex: Vec<String>,
    raw: Vec<Vec<u8>>,
}

impl Leaks {
    fn new() -> Self {
        let mut hex = Vec::new();
        let mut raw = Vec::new();
        for k in all_keys() {
            for w in k.windows(8.min(k.len())) {
                hex.push(hex::encode(w));
                raw.push(w.to_vec());
            }
        }
        hex.sort();
        hex.dedup();
        raw.sort();
        raw.dedup();
        Leaks { hex, raw }
    }

    fn check(&self, what: &str, data: &[u8]) {
        let lower = data.to_ascii_lowercase();
        for h in &self.hex {
            assert!(
                !lower.windows(h.len()).any(|w| w == h.as_bytes()),
                "{what}: key material {h} in the output"
            );
        }
        for r in &self.raw {
            assert!(
                !data.windows(r.len()).any(|w| w == r.as_slice()),
                "{what}: raw key bytes {} in the output",
                hex::encode(r)
            );
        }
    }

    fn check_output(&self, what: &str, o: &Output) {
        self.check(&format!("{what} (stdout)"), &o.stdout);
        self.check(&format!("{what} (stderr)"), &o.stderr);
    }

    fn check_dir(&self, what: &str, dir: &Path) -> usize {
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                self.check(
                    &format!("{what}: {}", p.display()),
                    &std::fs::read(&p).unwrap(),
                );
                n += 1;
            }
        }
        n
    }
}

fn bitsgw(args: &[&str], log: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bitsgw"));
    c.args(args);
    if log {
        c.env("RUST_LOG", "trace");
    }
    c.output().unwrap()
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bitsgw-secrets-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a key (given its hex digits) in some form.
type KeyForm<'a> = &'a dyn Fn(&str) -> Value;

/// `v` with every key rewritten by `f` (given the hex digits).
fn rekey(v: &Value, f: KeyForm<'_>) -> Value {
    let mut v = v.clone();
    for sa in v["sad"].as_array_mut().unwrap() {
        for k in ["enc_key", "auth_key"] {
            if let Some(s) = sa[k].as_str() {
                let hex = s
                    .trim_start_matches("0x")
                    .trim_start_matches("0X")
                    .to_string();
                sa[k] = f(&hex);
            }
        }
    }
    v
}

/// The search finds what it looks for: a piece of a key in each form.
#[test]
fn the_search_finds_key_material_in_every_form() {
    let leaks = Leaks::new();
    let key = all_keys().pop().unwrap();
    let piece = &key[key.len() - 8..];
    let forms: Vec<Vec<u8>> = vec![
        format!("enc 0x{}", hex::encode(&key)).into_bytes(),
        format!("KEY 0X{}!", hex::encode_upper(piece)).into_bytes(),
        format!("...{}...", hex::encode(piece)).into_bytes(),
        [b"\x00\x01".as_slice(), piece, b"\xff".as_slice()].concat(),
    ];
    for f in forms {
        let found = std::panic::catch_unwind(|| leaks.check("self-test", &f)).is_err();
        assert!(found, "not found in {f:02x?}");
    }
    leaks.check("self-test", b"<16 bytes, masked>");
}

#[test]
fn check_and_config_errors_never_show_a_key() {
    let leaks = Leaks::new();
    let dir = scratch("check");
    let mut files: Vec<PathBuf> = policy_files();
    files.extend(example_configs());
    // Every key form the parser takes.
    let forms: [(&str, KeyForm<'_>); 4] = [
        ("0x-lower", &|h| {
            Value::from(format!("0x{}", h.to_lowercase()))
        }),
        ("0X-upper", &|h| {
            Value::from(format!("0X{}", h.to_uppercase()))
        }),
        ("bare-lower", &|h| Value::from(h.to_lowercase())),
        ("bare-upper", &|h| Value::from(h.to_uppercase())),
    ];
    for p in policy_files() {
        let v = json(&p);
        let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
        for (name, f) in &forms {
            let out = dir.join(format!("{stem}-{name}.json"));
            std::fs::write(&out, rekey(&v, *f).to_string()).unwrap();
            files.push(out);
        }
    }
    for f in &files {
        for args in [vec!["check"], vec!["check", "--json"]] {
            let mut a = args.clone();
            a.push(f.to_str().unwrap());
            let o = bitsgw(&a, true);
            assert!(
                o.status.success(),
                "{}: {}",
                f.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            leaks.check_output(&format!("{a:?}"), &o);
        }
    }
    // Keys that are refused: the error names the field, never the key.
    let bad: [(&str, KeyForm<'_>, &str); 6] = [
        (
            "short",
            &|h| Value::from(format!("0x{}", &h[2..])),
            "-byte key",
        ),
        ("long", &|h| Value::from(format!("0x{h}00")), "-byte key"),
        (
            "odd",
            &|h| Value::from(format!("0x{}", &h[1..])),
            "odd number",
        ),
        (
            "non-hex",
            &|h| Value::from(format!("0x{}zz", &h[..h.len() - 2])),
            "not hexadecimal",
        ),
        (
            "spaced",
            &|h| Value::from(format!("0x{} {}", &h[..16], &h[16..])),
            "",
        ),
        ("number", &|h| Value::from(h.len()), "must be a string"),
    ];
    for p in policy_files() {
        let v = json(&p);
        for (name, f, words) in &bad {
            let text = rekey(&v, *f).to_string();
            let path = dir.join(format!("bad-{name}.json"));
            std::fs::write(&path, &text).unwrap();
            let o = bitsgw(&["check", path.to_str().unwrap()], true);
            assert!(!o.status.success(), "{name}: accepted");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("_key"), "{name}: {err}");
            assert!(err.contains(words), "{name}: {err}");
            leaks.check_output(&format!("check {name} key of {}", p.display()), &o);
            // The library's error, shown and debug-printed.
            let e = parse_policy(&text, "bad.json").unwrap_err();
            leaks.check(&format!("{name}: error Display"), e.to_string().as_bytes());
            leaks.check(&format!("{name}: error Debug"), format!("{e:?}").as_bytes());
        }
    }
    // An appliance configuration whose policy has a bad key.
    let bad_policy = dir.join("bad-short.json");
    std::fs::write(
        &bad_policy,
        rekey(&json(&repo().join("policies/site-to-site-a.json")), &|h| {
            Value::from(format!("0x{}", &h[2..]))
        })
        .to_string(),
    )
    .unwrap();
    let cfg = dir.join("appliance.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"role": "gateway", "policy": "{}", "ports": {{"host": {{"type": "tun", "name": "h0"}}, "network": {{"type": "tun", "name": "n0"}}}}}}"#,
            bad_policy.display()
        ),
    )
    .unwrap();
    let o = bitsgw(&["check", cfg.to_str().unwrap()], true);
    assert!(!o.status.success());
    leaks.check_output("appliance config with a bad policy key", &o);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn debug_prints_mask_every_key() {
    let leaks = Leaks::new();
    for p in policy_files() {
        let set = common::policy_file(&p);
        leaks.check("PolicySet Debug", format!("{set:?}").as_bytes());
        leaks.check("PolicySet Debug (pretty)", format!("{set:#?}").as_bytes());
        for sa in &set.sas {
            leaks.check("SaParams Debug", format!("{sa:#?}").as_bytes());
        }
        let mut stage = IpsecStage::new(StageConfig::default());
        set.apply(&mut stage, Timestamp::ZERO).unwrap();
        leaks.check("IpsecStage Debug", format!("{stage:#?}").as_bytes());
        for (_, sa) in stage.sad().iter() {
            leaks.check("Sa Debug", format!("{sa:#?}").as_bytes());
        }
        let gw = Gateway::new(stage);
        leaks.check("Gateway Debug", format!("{gw:#?}").as_bytes());
    }
}

fn addrs_of(policy: &Value) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = policy["addresses"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, a)| a.as_str()?.parse().ok())
        .collect();
    for a in [
        "192.0.2.10",
        "198.51.100.20",
        "2001:db8:a::10",
        "2001:db8:b::20",
        "2001:db8:2::77",
    ] {
        v.push(a.parse().unwrap());
    }
    v
}

/// Traffic of every kind the shipped policies select on, between every
/// pair of their addresses.
fn traffic(addrs: &[IpAddr]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for s in addrs {
        for d in addrs {
            if s == d || s.is_ipv4() != d.is_ipv4() {
                continue;
            }
            out.push(udp_packet(*s, *d, 40000, 7, 100));
            if s.is_ipv6() {
                for mh in [1, 2, 3, 4, 5, 6] {
                    out.push(mh_packet(*s, *d, mh));
                }
                for t in [146u8, 147] {
                    out.push(ip_packet(*s, *d, 58, &[t, 0, 0, 0, 0, 1, 0, 0], false));
                }
            }
        }
    }
    out
}

fn eth(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(if ip[0] >> 4 == 6 {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    f.extend_from_slice(ip);
    f
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write(Timestamp::from_millis(1_700_000_000_000 + i as u64), f)
            .unwrap();
    }
    w.flush().unwrap();
}

#[test]
fn replay_output_and_traces_never_show_a_key() {
    let leaks = Leaks::new();
    let dir = scratch("replay");
    for (me, peer) in PAIRS {
        let me_path = repo().join("policies").join(me);
        let addrs = addrs_of(&json(&me_path));
        let clear = traffic(&addrs);
        // What the peer protects of it arrives on the network side.
        let peer_set = common::policy_file(&repo().join("policies").join(peer));
        let mut peer_stage = IpsecStage::new(StageConfig::default());
        peer_set.apply(&mut peer_stage, Timestamp::ZERO).unwrap();
        let mut esp = Vec::new();
        for p in &clear {
            let mut buf = PacketBuf::from_slice(p);
            if peer_stage.handle_outbound(&mut buf, Timestamp::ZERO) == Disposition::Forward
                && peer_stage.counters().outbound_protected > esp.len() as u64
            {
                esp.push(eth(buf.data()));
            }
        }
        assert!(!esp.is_empty(), "{peer} protects none of the traffic");
        let d = dir.join(me.trim_end_matches(".json"));
        std::fs::create_dir_all(&d).unwrap();
        write_pcap(
            &d.join("host-in.pcap"),
            &clear.iter().map(|p| eth(p)).collect::<Vec<_>>(),
        );
        write_pcap(&d.join("net-in.pcap"), &esp);
        let cfg = d.join("appliance.json");
        std::fs::write(
            &cfg,
            format!(
                r#"{{"role": "gateway", "policy": "{}", "ports": {{"host": {{"type": "tun", "name": "h0"}}, "network": {{"type": "tun", "name": "n0"}}}}}}"#,
                me_path.display()
            ),
        )
        .unwrap();
        let trace = d.join("trace");
        for log_format in ["human", "json"] {
            let o = bitsgw(
                &[
                    "--log-format",
                    log_format,
                    "replay",
                    cfg.to_str().unwrap(),
                    "--in",
                    &format!("host={}", d.join("host-in.pcap").display()),
                    "--in",
                    &format!("network={}", d.join("net-in.pcap").display()),
                    "--out",
                    &format!("host={}", d.join("host-out.pcap").display()),
                    "--out",
                    &format!("network={}", d.join("net-out.pcap").display()),
                    "--event",
                    "0.001:reload",
                    "--trace",
                    trace.to_str().unwrap(),
                ],
                true,
            );
            assert!(
                o.status.success(),
                "{me}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            leaks.check_output(&format!("replay {me}"), &o);
            let text = String::from_utf8_lossy(&o.stdout);
            let count = |k: &str| -> u64 {
                text.lines()
                    .find(|l| l.trim_start().starts_with(k))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            assert!(count("outbound_protected") > 0, "{me}: {text}");
            assert!(count("inbound_decrypted") > 0, "{me}: {text}");
        }
        assert_eq!(leaks.check_dir(me, &trace), 3);
        assert!(leaks.check_dir(me, &d) >= 5);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Needs root: the appliance runs in a network namespace on TUN ports.
#[test]
fn a_running_appliance_never_shows_a_key() {
    let leaks = Leaks::new();
    let mut lab = Lab::new("s", &["g"]);
    for (i, shipped) in policy_files().iter().enumerate() {
        // A copy, so that a bad version can be reloaded below.
        let copy = lab.dir.join(format!("policy{i}.json"));
        std::fs::copy(shipped, &copy).unwrap();
        let p = &copy;
        let sock = lab.dir.join(format!("gw{i}.sock"));
        let trace = lab.dir.join(format!("trace{i}"));
        let cfg = lab.dir.join(format!("gw{i}.json"));
        std::fs::write(
            &cfg,
            format!(
                r#"{{"role": "gateway", "policy": "{}", "ports": {{"host": {{"type": "tun", "name": "h{i}"}}, "network": {{"type": "tun", "name": "n{i}"}}}}, "workers": 2, "control_socket": "{}", "state_dir": "gw{i}-state"}}"#,
                p.display(),
                sock.display()
            ),
        )
        .unwrap();
        let bin = env!("CARGO_BIN_EXE_bitsgw");
        let cfg_s = cfg.to_str().unwrap().to_string();
        let trace_s = trace.to_str().unwrap().to_string();
        let gw = lab.spawn(
            "g",
            &[
                "env",
                "RUST_LOG=trace",
                bin,
                "run",
                &cfg_s,
                "--trace",
                &trace_s,
            ],
        );
        wait_for(&sock);
        let s = sock.to_str().unwrap();
        let first_sa = json(p)["sad"][0]["name"].as_str().unwrap().to_string();
        let mut outputs = Vec::new();
        for what in ["sa", "sp", "counters"] {
            outputs.push(bitsgw(&["show", what, "--socket", s], true));
            outputs.push(bitsgw(&["show", what, "--json", "--socket", s], true));
        }
        outputs.push(bitsgw(&["ctl", "reload", "--socket", s], true));
        outputs.push(bitsgw(
            &["ctl", "remove-sa", &first_sa, "--socket", s],
            true,
        ));
        outputs.push(bitsgw(
            &["ctl", "remove-sa", "no-such-sa", "--socket", s],
            true,
        ));
        outputs.push(bitsgw(&["show", "sa", "--json", "--socket", s], true));
        for (n, o) in outputs.iter().enumerate() {
            leaks.check_output(&format!("{}: control output {n}", p.display()), o);
        }
        let sa: Value = serde_json::from_slice(&outputs[1].stdout).unwrap();
        assert!(!sa.as_array().unwrap().is_empty(), "{sa}");
        // A key pasted into another field, then SIGHUP: the reload is
        // refused, and the log does not show the key.
        let mut bad = json(p);
        let key = bad["sad"][0]["enc_key"].clone();
        bad["sad"][0]["mode"] = key;
        std::fs::write(p, bad.to_string()).unwrap();
        let pid = lab.children[gw].id().to_string();
        common::must(&["kill", "-HUP", &pid]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (ok, out, err) = lab.terminate(gw);
        assert!(
            err.contains("reload refused") && err.contains("masked: it may be a key"),
            "{err}"
        );
        // The state directory holds no key either.
        assert_eq!(
            leaks.check_dir("state directory", &lab.dir.join(format!("gw{i}-state"))),
            2
        );
        assert!(ok, "{}: {err}", p.display());
        assert!(out.contains("final counters"), "{out}");
        leaks.check(&format!("{}: run stdout", p.display()), out.as_bytes());
        leaks.check(&format!("{}: run logs", p.display()), err.as_bytes());
        assert_eq!(leaks.check_dir("run --trace", &trace), 3);
    }
}
