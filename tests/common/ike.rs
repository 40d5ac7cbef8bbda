//! The IKE labs' pieces (`lab_ike.rs`, `lab_ike_acquire.rs`): two sites
//! whose gateways key their tunnel with IKEv2, or bitsgw A with
//! strongSwan's charon as site B's gateway.

use super::{bitsgw, capture, start_charon_logging_keys, swanctl, Lab, CHARON};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The policy of gateway `side`: the sites' IPv4 prefixes protected by
/// IKE-keyed SAs, everything else discarded.
pub fn policy(side: &str) -> String {
    let (me, peer, local, remote, out, inb) = if side == "a" {
        (
            "203.0.113.1",
            "203.0.113.2",
            "192.0.2.0/24",
            "198.51.100.0/24",
            "a-to-b",
            "b-to-a",
        )
    } else {
        (
            "203.0.113.2",
            "203.0.113.1",
            "198.51.100.0/24",
            "192.0.2.0/24",
            "b-to-a",
            "a-to-b",
        )
    };
    format!(
        r#"{{
  "spd": {{
    "outbound": [
      {{"name": "sites-out", "local": "{local}", "remote": "{remote}", "action": "protect", "sa": "{out}"}},
      {{"name": "default-discard-out", "action": "discard"}}
    ],
    "inbound": [
      {{"name": "sites-in", "local": "{local}", "remote": "{remote}", "action": "protect", "sa": "{inb}"}},
      {{"name": "default-discard-in", "action": "discard"}}
    ]
  }},
  "sad": [
    {{"name": "{out}", "direction": "outbound", "keyed_by": "ike", "mode": "tunnel",
      "tunnel": {{"local": "{me}", "remote": "{peer}"}}}},
    {{"name": "{inb}", "direction": "inbound", "keyed_by": "ike", "mode": "tunnel",
      "tunnel": {{"local": "{me}", "remote": "{peer}"}}, "replay_window": 1024}}
  ]
}}"#
    )
}

/// Writes gateway `side`'s policy, PSK file and configuration; its path.
/// `peer_extra` adds fields to its peer (`"name": value, `); `start` is
/// its start action. A hands frames to two workers, B runs to completion.
/// Without a PSK the gateway authenticates with the certificate files
/// `ike-{side}.pem`, `ike-{side}.key` and `ike-ca-{side}.pem` in the lab's
/// folder.
pub fn gateway(lab: &Lab, side: &str, psk: Option<&str>, peer_extra: &str, start: &str) -> PathBuf {
    let pipeline = if side == "a" {
        WORKERS
    } else {
        RUN_TO_COMPLETION
    };
    gateway_with(lab, side, "", pipeline, (psk, peer_extra, start))
}

/// A pipeline of two workers behind the receive threads.
pub const WORKERS: &str = r#""workers": 2"#;
/// Each port's receive thread handles its own frames.
pub const RUN_TO_COMPLETION: &str = r#""workers": 1, "pipeline": "run-to-completion""#;
/// Two receive queues, each running to completion.
pub const QUEUES: &str = r#""workers": 2, "pipeline": "queues""#;

/// [`gateway`] with its files named with `tag` and `pipeline`
/// ([`WORKERS`] or [`RUN_TO_COMPLETION`]).
pub fn gateway_with(
    lab: &Lab,
    side: &str,
    tag: &str,
    pipeline: &str,
    (psk, peer_extra, start): (Option<&str>, &str, &str),
) -> PathBuf {
    let dir = &lab.dir;
    std::fs::write(dir.join(format!("ike-{side}{tag}.json")), policy(side)).unwrap();
    let auth = match psk {
        Some(psk) => {
            let psk_file = dir.join(format!("ike-{side}{tag}.psk"));
            std::fs::write(&psk_file, format!("{psk}\n")).unwrap();
            std::fs::set_permissions(&psk_file, std::fs::Permissions::from_mode(0o600)).unwrap();
            format!(r#""psk_file": "ike-{side}{tag}.psk""#)
        }
        None => format!(
            r#""auth": "certificate", "certificate_file": "ike-{side}.pem",
    "private_key_file": "ike-{side}.key", "ca_files": ["ike-ca-{side}.pem"]"#
        ),
    };
    let (me, peer, out, inb) = if side == "a" {
        ("203.0.113.1", "203.0.113.2", "a-to-b", "b-to-a")
    } else {
        ("203.0.113.2", "203.0.113.1", "b-to-a", "a-to-b")
    };
    let other = if side == "a" { "b" } else { "a" };
    let cfg = format!(
        r#"{{"role": "gateway", "policy": "ike-{side}{tag}.json",
  "ports": {{"host": {{"type": "af_packet", "interface": "host"}}, "network": {{"type": "af_packet", "interface": "wan"}}}},
  {pipeline}, "control_socket": "{}", "state_dir": "ike-{side}{tag}-state",
  "addresses": {{"network": ["{me}/24"]}},
  "peers": [{{
    "name": "site-{other}", "local": "{me}", "remote": "{peer}",
    "local_id": "fqdn:gw-{side}.example", "remote_id": "fqdn:gw-{other}.example",
    {auth},
    "ike_proposals": ["aes128gcm16-prfsha256-ecp256"], "esp_proposals": ["aes128gcm16"],
    {peer_extra}"start": "{start}",
    "children": [{{"outbound": "{out}", "inbound": "{inb}"}}]
  }}]}}"#,
        socket_with(lab, side, tag).display()
    );
    let path = dir.join(format!("ike-gw-{side}{tag}.json"));
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Makes the gateways of [`gateway`] in `dir` key two children of their
/// one peer: ICMP between the sites on the SAs of [`policy`] (`a-to-b`,
/// `b-to-a`), TCP on a second pair (`a-to-b-tcp`, `b-to-a-tcp`); nothing
/// else passes.
pub fn two_children(dir: &Path) {
    for side in ["a", "b"] {
        let one = policy(side);
        let entries = |direction: &str, sa: &str| {
            let at = one
                .find(&format!(r#"{{"name": "sites-{direction}""#))
                .unwrap();
            let entry = &one[at..at + one[at..].find('}').unwrap() + 1];
            let icmp = entry.replace(r#""action""#, r#""proto": "icmp", "action""#);
            let tcp = entry
                .replace("sites-", "tcp-")
                .replace(r#""action""#, r#""proto": "tcp", "action""#)
                .replace(&format!(r#""sa": "{sa}""#), &format!(r#""sa": "{sa}-tcp""#));
            (
                entry.to_string(),
                format!(
                    "{icmp},
      {tcp}"
                ),
            )
        };
        let (out, inb) = if side == "a" {
            ("a-to-b", "b-to-a")
        } else {
            ("b-to-a", "a-to-b")
        };
        let (sites_out, both_out) = entries("out", out);
        let (sites_in, both_in) = entries("in", inb);
        let sad_at = one.find(r#""sad": ["#).unwrap() + r#""sad": ["#.len();
        let sad = &one[sad_at..one.rfind(']').unwrap()];
        let more = sad
            .replace(&format!(r#""{out}""#), &format!(r#""{out}-tcp""#))
            .replace(&format!(r#""{inb}""#), &format!(r#""{inb}-tcp""#));
        let text = one
            .replace(&sites_out, &both_out)
            .replace(&sites_in, &both_in)
            .replace(sad, &format!("{sad},{more}"));
        std::fs::write(dir.join(format!("ike-{side}.json")), text).unwrap();
        let cfg = dir.join(format!("ike-gw-{side}.json"));
        let one_child = format!(r#"{{"outbound": "{out}", "inbound": "{inb}"}}"#);
        let both = format!(r#"{one_child}, {{"outbound": "{out}-tcp", "inbound": "{inb}-tcp"}}"#);
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&one_child, &both);
        std::fs::write(&cfg, text).unwrap();
    }
}

pub fn socket(lab: &Lab, side: &str) -> PathBuf {
    socket_with(lab, side, "")
}

/// The control socket of [`gateway_with`] `side` with `tag`.
pub fn socket_with(lab: &Lab, side: &str, tag: &str) -> PathBuf {
    lab.dir.join(format!("ike-{side}{tag}.sock"))
}

/// Makes the router of [`super::route_two_sites`] answer ARP for the far
/// gateway's address on both its links, so the gateways' own host stacks
/// (IKE) reach each other through it.
pub fn router_answers_for_gateways(lab: &Lab) {
    for k in [
        "net.ipv4.conf.ra.proxy_arp=1",
        "net.ipv4.conf.rb.proxy_arp=1",
    ] {
        lab.exec("r", &["sysctl", "-qw", k]);
    }
}

/// The lab, the capture's stop flag, frames and threads, the gateways.
pub type Running = (
    Lab,
    Arc<AtomicBool>,
    Arc<Mutex<Vec<Vec<u8>>>>,
    Vec<std::thread::JoinHandle<()>>,
    [usize; 2],
);

/// The two-site lab with the router answering ARP for the far gateway's
/// address (the gateways' own host stacks reach each other through it),
/// captures on the router's links, and both gateways running, A
/// initiating.
pub fn lab_with_gateways(tag: &str, psk_a: &str, psk_b: &str, peer_extra_a: &str) -> Running {
    lab_with_gateways_starting(tag, psk_a, psk_b, peer_extra_a, "initiate")
}

/// [`lab_with_gateways`] with A's start action `start_a` (B responds).
pub fn lab_with_gateways_starting(
    tag: &str,
    psk_a: &str,
    psk_b: &str,
    peer_extra_a: &str,
    start_a: &str,
) -> Running {
    lab_with_authenticated_gateways(
        tag,
        [Some(psk_a), Some(psk_b)],
        peer_extra_a,
        start_a,
        |_| {},
    )
}

/// [`lab_with_gateways_starting`] with each gateway's PSK or (none)
/// certificates, which `prepare` writes into the lab's folder (where it
/// may also change the gateways' files, written by then).
pub fn lab_with_authenticated_gateways(
    tag: &str,
    [psk_a, psk_b]: [Option<&str>; 2],
    peer_extra_a: &str,
    start_a: &str,
    prepare: impl FnOnce(&Path),
) -> Running {
    lab_with_gateways_edited(
        tag,
        [psk_a, psk_b],
        (peer_extra_a, start_a),
        prepare,
        |_, b| b,
    )
}

/// [`lab_with_authenticated_gateways`] with B's configuration text passed
/// through `edit_b` (given the lab's folder, which holds B's policy
/// `ike-b.json`) before B starts.
pub fn lab_with_gateways_edited(
    tag: &str,
    [psk_a, psk_b]: [Option<&str>; 2],
    (peer_extra_a, start_a): (&str, &str),
    prepare: impl FnOnce(&Path),
    edit_b: impl FnOnce(&Path, String) -> String,
) -> Running {
    let mut lab = Lab::new(tag, &["hA", "gA", "r", "gB", "hB"]);
    super::route_two_sites(&lab);
    router_answers_for_gateways(&lab);
    let (stop, seen, caps) = capture_router(&lab);
    let (cfg_a, cfg_b) = (
        gateway(&lab, "a", psk_a, peer_extra_a, start_a),
        gateway(&lab, "b", psk_b, "", "respond"),
    );
    prepare(&lab.dir);
    let text_b = std::fs::read_to_string(&cfg_b).unwrap();
    std::fs::write(&cfg_b, edit_b(&lab.dir, text_b)).unwrap();
    let exe = env!("CARGO_BIN_EXE_bitsgw");
    // The responder first, so the initiator's first IKE_SA_INIT is heard.
    let gw_b = lab.spawn("gB", &[exe, "run", cfg_b.to_str().unwrap()]);
    lab.wait_ready(gw_b, &socket(&lab, "b"));
    let gw_a = lab.spawn("gA", &[exe, "run", cfg_a.to_str().unwrap()]);
    lab.wait_ready(gw_a, &socket(&lab, "a"));
    (lab, stop, seen, caps, [gw_a, gw_b])
}

/// Waits up to 15 s for a ping from host A to cross the tunnel of
/// gateways `gw_a` and `gw_b`; panics with their output and logs if none
/// does.
pub fn await_tunnel(lab: &mut Lab, [gw_a, gw_b]: [usize; 2]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !ping(lab, "1") {
        if std::time::Instant::now() >= deadline {
            let (_, out_a, log_a) = lab.terminate(gw_a);
            let (_, out_b, log_b) = lab.terminate(gw_b);
            panic!("no ping through the tunnel\nA: {out_a}{log_a}\nB: {out_b}{log_b}");
        }
    }
}

/// Pings host A from host B `count` times; panics with ping's output if
/// one is lost.
pub fn assert_pings_from_b(lab: &Lab, count: &str) {
    let back = lab.try_exec(
        "hB",
        &["ping", "-c", count, "-i", "0.2", "-W", "1", "192.0.2.10"],
    );
    assert!(
        back.status.success(),
        "pings from B: {}",
        String::from_utf8_lossy(&back.stdout)
    );
}

pub fn ping(lab: &Lab, count: &str) -> bool {
    lab.try_exec(
        "hA",
        &["ping", "-c", count, "-i", "0.2", "-W", "1", "198.51.100.20"],
    )
    .status
    .success()
}

/// The CHILD_SAs `show ike` lists for the first peer.
pub fn child_sa_count(ike: &serde_json::Value) -> usize {
    ike["peers"][0]["child_sas"].as_array().map_or(0, Vec::len)
}

/// What `bitsgw show ARGS` prints.
pub fn show_text(socket: &Path, args: &[&str]) -> String {
    let mut all = vec!["show"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--socket", socket.to_str().unwrap()]);
    let out = bitsgw(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Host A - [bitsgw A] - router - charon (strongSwan with kernel-libipsec,
/// host B's router, as `bench_e2e.rs` runs it) - host B. The tunnel runs
/// between bitsgw's own address 203.0.113.1 and charon's 203.0.113.6.
pub fn build_mixed(lab: &Lab) {
    super::link_two_sites(lab);
    for (ns, dev, addr) in [
        ("hA", "eth0", "192.0.2.10/24"),
        ("r", "ra", "192.0.2.1/24"),
        ("r", "rb", "203.0.113.5/30"),
        ("gB", "wan", "203.0.113.6/30"),
        ("gB", "host", "198.51.100.1/24"),
        ("hB", "eth0", "198.51.100.20/24"),
    ] {
        lab.exec(ns, &["ip", "addr", "add", addr, "dev", dev]);
    }
    for (ns, via) in [
        ("hA", "192.0.2.1"),
        ("hB", "198.51.100.1"),
        ("gB", "203.0.113.5"),
    ] {
        lab.exec(ns, &["ip", "route", "add", "default", "via", via]);
    }
    for h in ["hA", "hB"] {
        lab.exec(h, &["ip", "link", "set", "eth0", "mtu", "1400"]);
    }
    // bitsgw's address lives in the bump: the router reaches it at host
    // A's MAC through the bump, and answers the bump's ARP for charon.
    super::reach_through_bump(lab, "203.0.113.1", "ra", "hA");
    for ns in ["r", "gB"] {
        for k in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            lab.exec(ns, &["sysctl", "-qw", k]);
        }
    }
    lab.exec("r", &["sysctl", "-qw", "net.ipv4.conf.ra.proxy_arp=1"]);
}

/// The proposals the labs with charon use unless told otherwise.
pub const IKE_PROPOSAL: &str = "aes128gcm16-prfsha256-ecp256";
pub const ESP_PROPOSAL: &str = "aes128gcm16";

/// charon's connection `bitsgw` in `gB`, the responder, forcing UDP
/// encapsulation (kernel-libipsec carries ESP in UDP only).
pub fn charon_conf(psk: &str) -> String {
    charon_conf_with(psk, IKE_PROPOSAL, ESP_PROPOSAL, ("", ""))
}

/// [`charon_conf`] with the IKE and ESP proposals `ike` and `esp` and
/// settings added to the connection and to its CHILD_SA.
pub fn charon_conf_with(psk: &str, ike: &str, esp: &str, extra: (&str, &str)) -> String {
    super::SwanConnection {
        side: "b",
        local_addrs: "203.0.113.6",
        remote_addrs: "203.0.113.1",
        local_ts: "198.51.100.0/24",
        remote_ts: "192.0.2.0/24",
        encap: true,
        psk,
        proposals: (ike, esp),
        extra,
    }
    .conf()
}

/// Writes bitsgw A's configuration and policy for the mixed lab
/// ([`build_mixed`]), its peer charon at 203.0.113.6, with start action
/// `start` and `peer_extra` (as for [`gateway`]); its path.
pub fn mixed_gateway(lab: &Lab, psk: &str, peer_extra: &str, start: &str) -> PathBuf {
    let cfg = gateway(lab, "a", Some(psk), peer_extra, start);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("203.0.113.2", "203.0.113.6");
    std::fs::write(&cfg, text).unwrap();
    std::fs::write(
        lab.dir.join("ike-a.json"),
        policy("a").replace("203.0.113.2", "203.0.113.6"),
    )
    .unwrap();
    cfg
}

/// Terminates `gateways` (each must exit cleanly), stops the captures and
/// says what crossed the wire: (ESP frames, IKE datagrams), panicking on
/// any cleartext frame of the hosts ([`super::between_gateways`]).
pub fn finish(lab: &mut Lab, gateways: &[usize], running: Captures) -> (usize, usize) {
    for gw in gateways {
        let (ok, out, log) = lab.terminate(*gw);
        assert!(ok, "gateway failed: {out}{log}");
    }
    let (stop, seen, caps) = running;
    stop.store(true, Ordering::SeqCst);
    for c in caps {
        c.join().unwrap();
    }
    let frames = seen.lock().unwrap();
    super::between_gateways(&frames)
}

/// The captures' stop flag, frames and threads.
pub type Captures = (
    Arc<AtomicBool>,
    Arc<Mutex<Vec<Vec<u8>>>>,
    Vec<std::thread::JoinHandle<()>>,
);

/// The PSK of the labs with charon, made for them only.
pub const SWAN_PSK: &str = "bitsgw-strongswan-lab-only-not-a-secret";

/// The mixed lab running: charon in `gB` (its files in `swan`) and
/// bitsgw A.
pub struct MixedLab {
    /// The lab.
    pub lab: Lab,
    /// charon's folder.
    pub swan: PathBuf,
    /// charon's index in the lab's children.
    pub charon: usize,
    /// bitsgw A's.
    pub gateway: usize,
}

/// [`build_mixed`] with charon started as the responder and bitsgw A
/// running with `peer_extra` and `start` (as for [`gateway`]); `None`,
/// said on stderr, without root or charon.
pub fn mixed_lab(tag: &str, peer_extra: &str, start: &str) -> Option<MixedLab> {
    let setup = Mixed {
        ike: IKE_PROPOSAL,
        esp: ESP_PROPOSAL,
        charon_extra: ("", ""),
        peer_extra,
        start,
    };
    mixed_lab_with(tag, &setup, |_| {})
}

/// What [`mixed_lab_with`] runs.
pub struct Mixed<'a> {
    /// The IKE and ESP proposals of both.
    pub ike: &'a str,
    pub esp: &'a str,
    /// Settings added to charon's connection and to its CHILD_SA.
    pub charon_extra: (&'a str, &'a str),
    /// As for [`gateway`].
    pub peer_extra: &'a str,
    pub start: &'a str,
}

/// [`mixed_lab`] with `setup`, charon logging the keys it derives (level
/// 4, for decoding a capture), and `before_charon` run once the lab is
/// built and before charon starts (a capture, counters).
pub fn mixed_lab_with(
    tag: &str,
    setup: &Mixed<'_>,
    before_charon: impl FnOnce(&mut Lab),
) -> Option<MixedLab> {
    if !super::is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    if !Path::new(CHARON).exists() {
        eprintln!("SKIPPED: strongSwan's charon is not installed at {CHARON} (scripts/setup-test-deps.sh installs it)");
        return None;
    }
    let mut lab = Lab::new(tag, &["hA", "gA", "r", "gB", "hB"]);
    build_mixed(&lab);
    before_charon(&mut lab);
    let swan = lab.dir.join("swan");
    let conf = charon_conf_with(SWAN_PSK, setup.ike, setup.esp, setup.charon_extra);
    let charon = start_charon_logging_keys(&mut lab, "gB", &swan, &conf);
    let cfg = mixed_gateway(&lab, SWAN_PSK, setup.peer_extra, setup.start);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(IKE_PROPOSAL, setup.ike)
        .replace(
            &format!(r#"["{ESP_PROPOSAL}"]"#),
            &format!(r#"["{}"]"#, setup.esp),
        );
    std::fs::write(&cfg, text).unwrap();
    let gateway = lab.spawn(
        "gA",
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", cfg.to_str().unwrap()],
    );
    lab.wait_ready(gateway, &socket(&lab, "a"));
    Some(MixedLab {
        lab,
        swan,
        charon,
        gateway,
    })
}

/// charon (files in `swan`) initiates its connection to bitsgw A.
pub fn charon_initiate(lab: &Lab, swan: &Path) {
    swanctl(
        lab,
        "gB",
        swan,
        &["--initiate", "--child", "net", "--timeout", "15"],
    );
}

/// Captures on both of the router's links, until [`finish`].
pub fn capture_router(lab: &Lab) -> Captures {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let caps = vec![
        capture(lab.ns("r"), "ra", Arc::clone(&stop), Arc::clone(&seen)),
        capture(lab.ns("r"), "rb", Arc::clone(&stop), Arc::clone(&seen)),
    ];
    (stop, seen, caps)
}
