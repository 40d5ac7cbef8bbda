//! `bitsgw replay`: capture files in, capture files out, deterministic;
//! the ESP it writes is verified by tshark (an implementation written
//! elsewhere) with `esp.icv_good == 1`; control events at capture times;
//! `--trace` writes a capture per stage boundary.
#![allow(clippy::unwrap_used)]

use bitsgw_io::pcap::{PcapReader, PcapWriter};
use bitsgw_io::LinkType;
use bitsgw_wire::craft::udp_packet;
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

/// tshark on `file`, decrypting site A's outbound IPv4 SA (its key from
/// the policy) and checking ICVs, printing `fields`.
fn tshark_site_a(file: &Path, fields: &[&str]) -> std::process::Output {
    let uat = site_a_out_uat();
    let mut args = vec![
        "-r",
        file.to_str().unwrap(),
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-o",
        "esp.enable_authentication_check:TRUE",
        "-o",
        &uat,
        "-T",
        "fields",
    ];
    for f in fields {
        args.extend(["-e", f]);
    }
    Command::new("tshark")
        .args(&args)
        .output()
        .expect("tshark is installed by scripts/setup-test-deps.sh")
}

/// tshark's ESP SA setting for site A's outbound IPv4 SA, from the policy.
fn site_a_out_uat() -> String {
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
    format!(
        r#"uat:esp_sa:"IPv4","203.0.113.1","203.0.113.2","{spi_num:#010x}","AES-GCM with 16 octet ICV [RFC4106]","{key}","NULL","""#
    )
}

#[test]
fn replay_is_deterministic_verified_by_tshark_and_traced() {
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_input(&dir.join("in.pcap"));
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
    let t = tshark_site_a(&out1, &["esp.icv_good", "udp.dstport"]);
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
    assert_eq!(out.len(), 3, "{text}");
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
    // RFC 3776 4.3: right after the BU, the host's packets take the new
    // care-of address, before any BA (in the tunnel, no HAO).
    for (n, (at, p)) in out[1..].iter().enumerate() {
        assert_eq!(*at, Timestamp::from_millis(t0 + 1000 * n as u64));
        assert_eq!(
            mobility_headers(p),
            (
                arg("2001:db8:2::100"),
                arg("2001:db8:1::1"),
                None,
                None,
                0x0000_2007
            )
        );
    }
    assert!(!text.contains("no_care_of_address"), "{text}");
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
        // The two data packets after it carry no Mobility Header.
        vec![arg("1\t5"), arg("\t"), arg("\t")]
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
    // host's second packet (after the BU and the first) leaves in the
    // tunnel from the care-of address.
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
    assert_eq!(out.len(), 3, "{text}");
    assert_eq!(out[2].0, Timestamp::from_millis(t0 + 1000));
    assert_eq!(
        mobility_headers(&out[2].1),
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

/// Twenty host-side Ethernet frames, 10 ms apart, into `path`.
fn write_input(path: &Path) {
    write_frames(path, 20);
}

/// `count` host-side Ethernet frames, 10 ms apart, into `path`.
fn write_frames(path: &Path, count: u16) {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    for n in 0..count {
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
}

/// `bitsgw replay` through `sh` with umask 0, so nothing it creates is
/// private by accident; (success, stdout, stderr).
fn replay_umask0(args: &[String]) -> (bool, String, String) {
    let mut line = format!("umask 0; exec {}", env!("CARGO_BIN_EXE_bitsgw"));
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let o = Command::new("sh").args(["-c", &line]).output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn replay_never_writes_over_its_input_and_traces_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-replay-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.pcap");
    write_input(&input);
    let original = std::fs::read(&input).unwrap();
    let cfg = repo().join("examples/configs/gateway-a.json");
    let args = |out: &Path, extra: &[&Path]| {
        let mut v = vec![
            "replay".to_string(),
            cfg.display().to_string(),
            "--in".into(),
            format!("host={}", input.display()),
            "--out".into(),
            format!("network={}", out.display()),
        ];
        for t in extra {
            v.push("--trace".into());
            v.push(t.display().to_string());
        }
        v
    };

    // The input itself, a symbolic link to it, a hard link to it: refused,
    // and the input is untouched.
    let symlink = dir.join("symlink.pcap");
    std::os::unix::fs::symlink(&input, &symlink).unwrap();
    let hardlink = dir.join("hardlink.pcap");
    std::fs::hard_link(&input, &hardlink).unwrap();
    let same_through_dots = dir.join(".").join("in.pcap");
    for out in [&input, &symlink, &hardlink, &same_through_dots] {
        let (ok, _, err) = replay_umask0(&args(out, &[]));
        assert!(!ok, "{} accepted", out.display());
        assert!(err.contains("is the input capture"), "{err}");
        assert_eq!(std::fs::read(&input).unwrap(), original);
    }

    // A trace directory with a link planted where the host capture goes:
    // the link is replaced, its target untouched; every capture is 0600
    // under umask 0, and a new directory is 0700.
    let victim = dir.join("victim");
    std::fs::write(&victim, b"not a capture").unwrap();
    let trace = dir.join("trace");
    std::fs::create_dir(&trace).unwrap();
    std::os::unix::fs::symlink(&victim, trace.join("host.pcap")).unwrap();
    let out = dir.join("out.pcap");
    let (ok, _, err) = replay_umask0(&args(&out, &[&trace]));
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"not a capture");
    for name in ["host.pcap", "after-ipsec.pcap", "wire.pcap"] {
        let p = trace.join(name);
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert!(meta.file_type().is_file(), "{name}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        assert_eq!(frames(&p).len(), 20, "{name}");
    }
    let fresh = dir.join("new-trace");
    let (ok, _, err) = replay_umask0(&args(&out, &[&fresh]));
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // A trace directory others can write to is refused.
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (ok, _, err) = replay_umask0(&args(&out, &[&shared]));
    assert!(!ok);
    assert!(
        err.contains("trace directory") && err.contains("others can write"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A trace on a full file system: the failures are warned about as they
/// happen and the replay fails saying the captures are incomplete. The
/// small file system is mounted in a mount namespace of the replay's own
/// (`unshare -m`), which goes away with it.
#[test]
fn trace_write_failures_are_warned_about_and_fail_the_replay() {
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-replay-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let small = dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let input = dir.join("in.pcap");
    write_frames(&input, 400);
    let cfg = repo().join("examples/configs/gateway-a.json");
    let script = format!(
        "mount -t tmpfs -o size=16k tmpfs '{small}' && exec '{bin}' replay '{cfg}' --in 'host={input}' --trace '{small}/trace'",
        small = small.display(),
        bin = env!("CARGO_BIN_EXE_bitsgw"),
        cfg = cfg.display(),
        input = input.display(),
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("could not be written; the captures in") && err.contains("are incomplete"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `replay` applies the configuration's `layer2` settings: protected IPv4
/// behind an 802.1Q tag leaves as ESP behind the same tag (tshark finds
/// the VLAN and a good ICV), PPPoE and LLDP are dropped and counted by
/// EtherType, and an EtherType the configuration allows passes.
#[test]
fn replay_keeps_vlan_tags_and_applies_the_layer2_settings() {
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-replay-l2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let macs = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    let ip = udp_packet(
        "192.0.2.10".parse().unwrap(),
        "198.51.100.20".parse().unwrap(),
        40000,
        40001,
        200,
    );
    let tagged = [&macs[..], &[0x81, 0x00, 0x00, 0x2a, 0x08, 0x00], &ip].concat();
    let pppoe_len = u16::try_from(ip.len() + 2).unwrap().to_be_bytes();
    let pppoe = [
        &macs[..],
        &[0x88, 0x64, 0x11, 0x00, 0x00, 0x01],
        &pppoe_len,
        &[0x00, 0x21],
        &ip,
    ]
    .concat();
    let lldp = [&macs[..], &[0x88, 0xcc], &[0u8; 46][..]].concat();
    let mut w = PcapWriter::create(&dir.join("in.pcap"), LinkType::Ethernet).unwrap();
    for (n, f) in [&tagged, &pppoe, &lldp].into_iter().enumerate() {
        w.write(Timestamp::from_millis(1_700_000_000_000 + n as u64 * 10), f)
            .unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let base = std::fs::read_to_string(repo().join("examples/configs/gateway-a.json"))
        .unwrap()
        .replace(
            "../../policies/site-to-site-a.json",
            repo()
                .join("policies/site-to-site-a.json")
                .to_str()
                .unwrap(),
        );
    let strict = dir.join("strict.json");
    std::fs::write(&strict, &base).unwrap();
    let lldp_ok = dir.join("lldp.json");
    std::fs::write(
        &lldp_ok,
        base.replacen(
            r#""mtu": 1500,"#,
            r#""mtu": 1500, "layer2": {"allow": ["0x88cc"]},"#,
            1,
        ),
    )
    .unwrap();

    let out = dir.join("strict.pcap");
    let text = replay(&dir, &strict, &[], &out);
    assert!(
        text.contains("non-IP frames dropped by EtherType: 0x8864 1, 0x88cc 1"),
        "{text}"
    );
    let sent = frames(&out);
    assert_eq!(sent.len(), 1, "{text}");
    assert_eq!(&sent[0].1[..16], &tagged[..16], "MACs and tag kept");
    let t = tshark_site_a(&out, &["vlan.id", "esp.icv_good", "udp.dstport"]);
    assert_eq!(
        String::from_utf8_lossy(&t.stdout).trim(),
        "42\t1\t40001",
        "{}",
        String::from_utf8_lossy(&t.stderr)
    );

    let out = dir.join("lldp.pcap");
    let text = replay(&dir, &lldp_ok, &[], &out);
    assert!(
        text.contains("non-IP frames dropped by EtherType: 0x8864 1\n"),
        "{text}"
    );
    let sent = frames(&out);
    assert_eq!(sent.len(), 2, "{text}");
    assert_eq!(sent[1].1, lldp);
    std::fs::remove_dir_all(&dir).unwrap();
}
