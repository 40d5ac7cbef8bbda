//! `bitsgw replay`: capture files in, capture files out, deterministic;
//! the ESP it writes is verified by tshark (an implementation written
//! elsewhere) with `esp.icv_good == 1`; control events at capture times;
//! `--trace` writes a capture per stage boundary.
#![allow(clippy::unwrap_used)]

use bitsgw_io::pcap::{PcapReader, PcapWriter};
use bitsgw_io::LinkType;
use bitsgw_wire::build::udp_packet;
use bitsgw_wire::Timestamp;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn frames(path: &Path) -> Vec<(Timestamp, Vec<u8>)> {
    let mut r = PcapReader::open(path).unwrap();
    let mut out = Vec::new();
    while let Some(f) = r.next_packet().unwrap() {
        out.push(f);
    }
    out
}

fn replay(dir: &Path, cfg: &Path, extra: &[&str], out: &Path) -> String {
    let input = dir.join("in.pcap");
    let mut args: Vec<String> = vec![
        "replay".into(),
        cfg.display().to_string(),
        "--in".into(),
        format!("host={}", input.display()),
        "--out".into(),
        format!("network={}", out.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = Command::new(env!("CARGO_BIN_EXE_bitsgw"))
        .args(&args)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    // Deterministic by design: no sequence lease, and it says so.
    assert!(
        log.contains("replay keeps no sequence lease") && log.contains("can not reach a network"),
        "{log}"
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn replay_is_deterministic_verified_by_tshark_and_traced() {
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Host-side Ethernet frames, 10 ms apart.
    let mut w = PcapWriter::create(&dir.join("in.pcap"), LinkType::Ethernet).unwrap();
    for n in 0..20u16 {
        let ip = udp_packet(
            "192.0.2.10".parse().unwrap(),
            "198.51.100.20".parse().unwrap(),
            40000,
            40000 + n,
            200,
        );
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&ip);
        w.write(
            Timestamp::from_millis(1_700_000_000_000 + u64::from(n) * 10),
            &f,
        )
        .unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let cfg = repo().join("examples/configs/gateway-a.json");
    let (out1, out2) = (dir.join("out1.pcap"), dir.join("out2.pcap"));
    let trace = dir.join("trace");
    let text = replay(&dir, &cfg, &["--trace", trace.to_str().unwrap()], &out1);
    assert!(text.contains("network: 20 frames"), "{text}");
    replay(&dir, &cfg, &[], &out2);
    assert_eq!(
        std::fs::read(&out1).unwrap(),
        std::fs::read(&out2).unwrap(),
        "byte-identical output"
    );
    // A trace per stage boundary.
    for (name, n) in [
        ("host.pcap", 20),
        ("after-ipsec.pcap", 20),
        ("wire.pcap", 20),
    ] {
        assert_eq!(frames(&trace.join(name)).len(), n, "{name}");
    }
    // tshark decrypts every packet and finds its ICV good.
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("policies/site-to-site-a.json")).unwrap(),
    )
    .unwrap();
    let sa = policy["sad"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "a-to-b-v4")
        .unwrap();
    assert_eq!(sa["transform"], "aes-gcm-128");
    let key = sa["enc_key"].as_str().unwrap();
    let spi = sa["spi"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:#x}", sa["spi"].as_u64().unwrap()));
    let spi_num = u32::from_str_radix(spi.trim_start_matches("0x"), 16).unwrap();
    let uat = format!(
        r#"uat:esp_sa:"IPv4","203.0.113.1","203.0.113.2","{spi_num:#010x}","AES-GCM with 16 octet ICV [RFC4106]","{key}","NULL","""#
    );
    let t = Command::new("tshark")
        .args([
            "-r",
            out1.to_str().unwrap(),
            "-o",
            "esp.enable_encryption_decode:TRUE",
            "-o",
            "esp.enable_authentication_check:TRUE",
            "-o",
            &uat,
            "-T",
            "fields",
            "-e",
            "esp.icv_good",
            "-e",
            "udp.dstport",
        ])
        .output()
        .expect("tshark is installed by scripts/setup-test-deps.sh");
    let lines: Vec<String> = String::from_utf8_lossy(&t.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines.len(),
        20,
        "{lines:?} {}",
        String::from_utf8_lossy(&t.stderr)
    );
    for (n, l) in lines.iter().enumerate() {
        assert_eq!(l, &format!("1\t{}", 40000 + n), "tshark: {l}");
    }
    // An event at 0.095 s removes the SA: frames after it are not sent.
    let out3 = dir.join("out3.pcap");
    let text = replay(&dir, &cfg, &["--event", "0.095:remove-sa a-to-b-v4"], &out3);
    assert_eq!(frames(&out3).len(), 10);
    assert!(text.contains("no_sa"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `bitsgw replay` with these arguments; its stdout.
fn bitsgw_replay(args: &[String]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_bitsgw"))
        .arg("replay")
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn v6(b: &[u8]) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap())
}

/// The mobility headers of a raw IPv6 packet, decoded from its bytes:
/// (source, destination, Home Address option, type 2 routing header
/// address, SPI of the ESP that follows).
fn mobility_headers(p: &[u8]) -> (String, String, Option<String>, Option<String>, u32) {
    assert_eq!(p[0] >> 4, 6, "IPv6");
    let (src, dst) = (v6(&p[8..24]).to_string(), v6(&p[24..40]).to_string());
    let (mut next, mut at) = (p[6], 40);
    let (mut hao, mut rh2) = (None, None);
    loop {
        let h = &p[at..];
        match next {
            60 => {
                let len = (usize::from(h[1]) + 1) * 8;
                let mut o = 2;
                while o < len {
                    match h[o] {
                        0 => o += 1,
                        201 => {
                            assert_eq!(h[o + 1], 16, "HAO length");
                            hao = Some(v6(&h[o + 2..o + 18]).to_string());
                            o += 18;
                        }
                        _ => o += 2 + usize::from(h[o + 1]),
                    }
                }
                next = h[0];
                at += len;
            }
            43 => {
                assert_eq!(h[2], 2, "routing type 2");
                assert_eq!(h[3], 1, "segments left 1");
                rh2 = Some(v6(&h[8..24]).to_string());
                next = h[0];
                at += (usize::from(h[1]) + 1) * 8;
            }
            50 => {
                let spi = u32::from_be_bytes(h[..4].try_into().unwrap());
                return (src, dst, hao, rh2, spi);
            }
            other => panic!("unexpected next header {other}"),
        }
    }
}

/// The value of a counter line (`  name   value`) in replay's output.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name))
                .then(|| w.next().and_then(|v| v.parse().ok()))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no counter {name} in\n{text}"))
}

/// tshark decrypts `file`'s ESP with the SA `name` of `policy` (AES-GCM)
/// between `src` and `dst`: per packet, the ICV check and the Mobility
/// Header type inside.
fn tshark_mh(file: &Path, policy: &str, name: &str, src: &str, dst: &str) -> Vec<String> {
    let policy: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("policies").join(policy)).unwrap(),
    )
    .unwrap();
    let sa = policy["sad"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap();
    assert_eq!(sa["transform"], "aes-gcm-128");
    let spi =
        u32::from_str_radix(sa["spi"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let uat = format!(
        r#"uat:esp_sa:"IPv6","{src}","{dst}","{spi:#010x}","AES-GCM with 16 octet ICV [RFC4106]","{}","NULL","""#,
        sa["enc_key"].as_str().unwrap()
    );
    let t = Command::new("tshark")
        .args(["-r", file.to_str().unwrap()])
        .args(["-o", "esp.enable_encryption_decode:TRUE"])
        .args(["-o", "esp.enable_authentication_check:TRUE"])
        .args(["-o", &uat])
        .args(["-T", "fields", "-e", "esp.icv_good", "-e", "mip6.mhtype"])
        .output()
        .expect("tshark is installed by scripts/setup-test-deps.sh");
    String::from_utf8_lossy(&t.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The `mn` and `ha` roles over captures: a movement event makes the
/// mobile node send its Binding Update (from the care-of address, Home
/// Address option, ESP of the BU SA); the home agent answers it with a
/// Binding Acknowledgement (to the care-of address, type 2 routing header,
/// ESP of the BA SA); fed that, the mobile node registers and tunnels the
/// host's traffic from its care-of address.
#[test]
fn mn_and_ha_replays_exchange_binding_update_and_ack() {
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-replay-mob-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t0 = 1_700_000_000_000u64;
    // The host behind the mobile node sends to a correspondent, now and a
    // second later (raw IP, as on a TUN port).
    let host = dir.join("host.pcap");
    let mut w = PcapWriter::create(&host, LinkType::RawIp).unwrap();
    for (n, ms) in [0u64, 1000].into_iter().enumerate() {
        let ip = udp_packet(
            "2001:db8:1::100".parse().unwrap(),
            "2001:db8:1::77".parse().unwrap(),
            5000,
            6000 + n as u16,
            100,
        );
        w.write(Timestamp::from_millis(t0 + ms), &ip).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let mn = repo().join("examples/configs/mn.json");
    let ha = repo().join("examples/configs/ha.json");
    let arg = |s: &str| s.to_string();
    let path = |p: &Path| p.display().to_string();
    // 1. The mobile node moves to 2001:db8:2::100 at once: one BU leaves.
    let bu = dir.join("bu.pcap");
    let text = bitsgw_replay(&[
        path(&mn),
        arg("--in"),
        format!("host={}", path(&host)),
        arg("--out"),
        format!("network={}", path(&bu)),
        arg("--event"),
        arg("0:move 2001:db8:2::100"),
    ]);
    let out = frames(&bu);
    assert_eq!(out.len(), 1, "{text}");
    assert_eq!(out[0].0, Timestamp::from_millis(t0), "sent at the event");
    assert_eq!(
        mobility_headers(&out[0].1),
        (
            arg("2001:db8:2::100"),
            arg("2001:db8:1::1"),
            Some(arg("2001:db8:1::100")),
            None,
            0x0000_2001
        )
    );
    assert_eq!(counter(&text, "bu_sent"), 1, "{text}");
    // The host's packets had no registered care-of address yet: counted.
    assert_eq!(counter(&text, "no_care_of_address"), 2, "{text}");
    // 2. The home agent takes it and answers.
    let ba = dir.join("ba.pcap");
    let text = bitsgw_replay(&[
        path(&ha),
        arg("--in"),
        format!("network={}", path(&bu)),
        arg("--out"),
        format!("network={}", path(&ba)),
    ]);
    let out = frames(&ba);
    assert_eq!(out.len(), 1, "{text}");
    assert_eq!(
        mobility_headers(&out[0].1),
        (
            arg("2001:db8:1::1"),
            arg("2001:db8:2::100"),
            None,
            Some(arg("2001:db8:1::100")),
            0x0000_2002
        )
    );
    assert_eq!(counter(&text, "bu_accepted"), 1, "{text}");
    assert_eq!(counter(&text, "ba_sent"), 1, "{text}");
    // tshark, written elsewhere, decrypts both with the policy files' keys
    // and finds a BU (MH type 5) and a BA (6) with good ICVs. It looks the
    // SAs up by the home address (from the Home Address option and the
    // routing header), as RFC 3776 keys them: the SAs never learn the
    // care-of address.
    assert_eq!(
        tshark_mh(
            &bu,
            "dsmip-hostwide-mn.json",
            "sa1",
            "2001:db8:1::100",
            "2001:db8:1::1"
        ),
        vec![arg("1\t5")]
    );
    assert_eq!(
        tshark_mh(
            &ba,
            "dsmip-hostwide-ha.json",
            "sa2",
            "2001:db8:1::1",
            "2001:db8:1::100"
        ),
        vec![arg("1\t6")]
    );
    // 3. The mobile node again, with the BA coming back: registered, the
    // host's second packet leaves in the tunnel from the care-of address.
    let net = dir.join("net.pcap");
    let text = bitsgw_replay(&[
        path(&mn),
        arg("--in"),
        format!("host={}", path(&host)),
        arg("--in"),
        format!("network={}", path(&ba)),
        arg("--out"),
        format!("network={}", path(&net)),
        arg("--event"),
        arg("0:move 2001:db8:2::100"),
    ]);
    assert_eq!(counter(&text, "ba_accepted"), 1, "{text}");
    let out = frames(&net);
    assert_eq!(out.len(), 2, "{text}");
    assert_eq!(out[1].0, Timestamp::from_millis(t0 + 1000));
    assert_eq!(
        mobility_headers(&out[1].1),
        (
            arg("2001:db8:2::100"),
            arg("2001:db8:1::1"),
            None,
            None,
            0x0000_2007
        )
    );
    // Events the role can not take are refused.
    let o = Command::new(env!("CARGO_BIN_EXE_bitsgw"))
        .args(["replay", ha.to_str().unwrap(), "--in"])
        .arg(format!("network={}", path(&bu)))
        .args(["--event", "0:move 2001:db8:2::100"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("move needs the mn role"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
