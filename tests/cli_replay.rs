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
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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
