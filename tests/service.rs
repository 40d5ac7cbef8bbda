//! bitsgw as a systemd service, without systemd as PID 1: the unit file
//! passes `systemd-analyze verify`; `bitsgw run` talks to a stand-in
//! notify socket (readiness only once the control socket answers, the
//! watchdog fed while every forwarding thread is live and not while one
//! is stuck, reloads and their outcome, stopping); and run as root with
//! `"user"` it becomes that user with no capability left, and still
//! forwards, reloads and answers.
//!
//! Needs root (network namespaces, TUN), iproute2, iputils-ping, ethtool
//! and systemd-analyze (`scripts/setup-test-deps.sh`). Everything it
//! creates it removes, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bitsgw, gateway_config, gateway_socket, must, wait_for, Lab, LockFiles};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The unit, with ExecStart and ExecReload pointing at the binary under
/// test (verify checks that the commands exist), is clean: no message at
/// all, exit status 0. The man pages it names are checked in the Debian
/// package test, where they exist.
#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "systemd-analyze is missing: install the Debian package systemd (scripts/setup-test-deps.sh does)"
    );
    let unit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/bitsgw@.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/bitsgw run /etc/bitsgw/%i.json"));
    let dir = std::env::temp_dir().join(format!("bitsgw-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("bitsgw@verify.service");
    std::fs::write(
        &copy,
        text.replace("/usr/bin/bitsgw", env!("CARGO_BIN_EXE_bitsgw")),
    )
    .unwrap();
    let out = std::process::Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
}

/// One notification datagram and when it came.
struct Note {
    text: String,
    at: Instant,
}

/// Receives notifications until one contains `what` (returned with all
/// before it), or fails after `limit`.
fn until(sock: &UnixDatagram, what: &str, limit: Duration) -> (Vec<Note>, Note) {
    let deadline = Instant::now() + limit;
    let mut before = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no notification with {what:?} within {limit:?}; got {:?}",
            before.iter().map(|n: &Note| &n.text).collect::<Vec<_>>()
        );
        sock.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let note = Note {
                text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                at: Instant::now(),
            };
            if note.text.contains(what) {
                return (before, note);
            }
            before.push(note);
        }
    }
}

fn watchdogs(notes: &[Note]) -> Vec<Instant> {
    notes
        .iter()
        .filter(|n| n.text.lines().any(|l| l == "WATCHDOG=1"))
        .map(|n| n.at)
        .collect()
}

/// TUN ports.
const TUN_PORTS: &str =
    r#"{"host": {"type": "tun", "name": "svhost"}, "network": {"type": "tun", "name": "svnet"}}"#;

/// A gateway's configuration with `ports`, its control socket in
/// `socket_dir`: the configuration, the policy file and the socket.
fn gateway(lab: &Lab, socket_dir: &Path, ports: &str) -> (PathBuf, PathBuf, PathBuf) {
    let policy = lab.dir.join("policy.json");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/site-to-site-a.json"),
        &policy,
    )
    .unwrap();
    let socket = socket_dir.join("gw.sock");
    let config = lab.dir.join("gw.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"role": "gateway", "policy": "{}",
  "ports": {}, "workers": 1, "control_socket": "{}", "state_dir": "{}"}}"#,
            policy.display(),
            ports,
            socket.display(),
            socket_dir.join("state").display()
        ),
    )
    .unwrap();
    (config, policy, socket)
}

/// Readiness, the watchdog, reloads and stopping, as systemd would see
/// them through NOTIFY_SOCKET (a stand-in datagram socket here). The
/// watchdog interval is 2 s, so it is fed every second while no thread's
/// heartbeat is older than that; 4 s after start the host-side receive
/// thread is stalled for 4 s (a debug-build-only setting,
/// `BITSGW_DEBUG_STALL`), and the feeding stops for that time.
#[test]
fn readiness_watchdog_and_reloads_reach_the_notify_socket() {
    let mut lab = Lab::new("sv", &["g"]);
    let (config, policy, socket) = gateway(&lab, &lab.dir, TUN_PORTS);
    let notify_path = lab.dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let gw = lab.spawn(
        "g",
        &[
            "env",
            &format!("NOTIFY_SOCKET={}", notify_path.display()),
            "WATCHDOG_USEC=2000000",
            "BITSGW_DEBUG_STALL=bitsgw-rx-host:4000:4000",
            env!("CARGO_BIN_EXE_bitsgw"),
            "run",
            config.to_str().unwrap(),
        ],
    );
    let sock = socket.to_str().unwrap();

    // READY=1 comes first, and once it is there the control socket answers.
    let (before, ready) = until(&notify, "READY=1", Duration::from_secs(15));
    assert!(
        before.is_empty(),
        "notified before READY=1: {}",
        before[0].text
    );
    assert!(ready.text.contains("STATUS=forwarding"), "{}", ready.text);
    let show = bitsgw(&["show", "counters", "--socket", sock]);
    assert!(
        show.status.success(),
        "READY=1 sent before the control socket answers: {}",
        String::from_utf8_lossy(&show.stderr)
    );

    // Fed while live; not while the receive thread is stuck; fed again
    // once it goes round again.
    let (live, stuck) = until(&notify, "is stuck", Duration::from_secs(10));
    assert!(
        stuck.text.contains("bitsgw-rx-host"),
        "the stuck thread is named: {}",
        stuck.text
    );
    let fed = watchdogs(&live);
    assert!(fed.len() >= 3, "fed {} times in the first 4 s", fed.len());
    let (during, back) = until(&notify, "is live again", Duration::from_secs(10));
    assert!(
        watchdogs(&during).is_empty(),
        "the watchdog was fed while a forwarding thread was stuck"
    );
    let last_fed = *fed.last().unwrap();
    assert!(
        back.at.duration_since(last_fed) >= Duration::from_millis(2500),
        "feeding paused only {:?}",
        back.at.duration_since(last_fed)
    );
    let (_, _) = until(&notify, "WATCHDOG=1", Duration::from_secs(3));

    // SIGHUP: RELOADING=1 with the monotonic time, then READY=1 and the
    // outcome.
    let pid = lab.children[gw].id().to_string();
    must(&["kill", "-HUP", &pid]);
    let (_, reloading) = until(&notify, "RELOADING=1", Duration::from_secs(5));
    assert!(
        reloading.text.contains("MONOTONIC_USEC="),
        "{}",
        reloading.text
    );
    let (_, reloaded) = until(&notify, "READY=1", Duration::from_secs(5));
    assert!(
        reloaded.text.contains("last reload: policies reloaded"),
        "{}",
        reloaded.text
    );

    // A broken policy file: the reload is refused, `ctl reload` (the
    // unit's ExecReload) exits non-zero, and the status says so.
    std::fs::write(&policy, "{ not json").unwrap();
    let refused = bitsgw(&["ctl", "reload", "--socket", sock]);
    assert_eq!(refused.status.code(), Some(1));
    let (_, _) = until(&notify, "RELOADING=1", Duration::from_secs(5));
    let (_, after) = until(&notify, "READY=1", Duration::from_secs(5));
    assert!(
        after.text.contains("previous policies") && after.text.contains("refused"),
        "{}",
        after.text
    );

    let (ok, _, err) = lab.terminate(gw);
    let (_, stopping) = until(&notify, "STOPPING=1", Duration::from_secs(2));
    assert!(stopping.text.contains("STATUS=stopping"));
    assert!(ok, "bitsgw run failed: {err}");
}

/// As the unit starts it: as an unprivileged user with CAP_NET_RAW and
/// CAP_NET_ADMIN as ambient capabilities (systemd's User= and
/// AmbientCapabilities=, here setpriv), and a runtime directory of that
/// user for the interface locks (systemd's RuntimeDirectory=, here a
/// tmpfs on /run/bitsgw in the namespace's own mounts). bitsgw opens its
/// packet sockets, then gives every capability up: none is left in any
/// thread, and the control socket answers.
#[test]
fn started_with_ambient_capabilities_it_gives_them_all_up() {
    let mut lab = Lab::new("sa", &["g"]);
    let (uid, gid) = nobody();
    let sockets = lab.dir.join("run");
    // The user's own state directory, as systemd's StateDirectory= makes.
    std::fs::create_dir_all(sockets.join("state")).unwrap();
    must(&[
        "chown",
        "-R",
        &format!("{uid}:{gid}"),
        sockets.to_str().unwrap(),
    ]);
    // Packet sockets (CAP_NET_RAW) on a veth pair: /dev/net/tun may be
    // closed to other users than root.
    lab.link("g", "host", "g", "wan");
    lab.up("g", &["host", "wan"], false);
    let (config, _policy, socket) = gateway(
        &lab,
        &sockets,
        r#"{"host": {"type": "af_packet", "interface": "host"}, "network": {"type": "af_packet", "interface": "wan"}}"#,
    );
    std::fs::create_dir_all(bitsgw_io::process::LOCK_DIR).unwrap();
    let script = format!(
        "mount -t tmpfs -o mode=0755,uid={uid},gid={gid} bitsgw-run {} && exec setpriv --reuid={uid} --regid={gid} --clear-groups --inh-caps=+net_raw,+net_admin --ambient-caps=+net_raw,+net_admin {} run {}",
        bitsgw_io::process::LOCK_DIR,
        env!("CARGO_BIN_EXE_bitsgw"),
        config.display()
    );
    let gw = lab.spawn("g", &["sh", "-c", &script]);
    wait_for(&socket);
    let pid = lab.children[gw].id();
    let show = bitsgw(&["show", "counters", "--socket", socket.to_str().unwrap()]);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let tasks: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(tasks.len() >= 3, "{pid}: threads {tasks:?}");
    for task in &tasks {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let name = status_field(&status, "Name");
        assert_eq!(status_field(&status, "Uid"), [&*uid; 4].join(" "), "{name}");
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(
                status_field(&status, set),
                "0000000000000000",
                "{name} {set}"
            );
        }
        assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{name}");
    }
    let (ok, _, err) = lab.terminate(gw);
    assert!(ok, "bitsgw run did not stop cleanly: {err}");
}

/// A field of /proc/PID/status (or of a thread's).
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The uid and gid of `nobody` and its primary group.
fn nobody() -> (String, String) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("user nobody in /etc/passwd");
    let f: Vec<&str> = line.split(':').collect();
    (f[2].to_string(), f[3].to_string())
}

/// Started as root with `"user": "nobody"`, both gateways of the
/// two-site lab are that user in every thread, with no capability in any
/// set (the bounding set included); ping goes through, `show counters`
/// answers, SIGHUP reloads the policy file (read as nobody), and they stop
/// cleanly.
#[test]
fn run_as_a_user_keeps_no_capability_and_still_forwards() {
    let mut lab = Lab::new("sp", &["hA", "gA", "r", "gB", "hB"]);
    let _locks = LockFiles::of(&lab, &["gA", "gB"]);
    common::route_two_sites(&lab);
    let mut gateways = Vec::new();
    for (side, ns) in [("a", "gA"), ("b", "gB")] {
        let config = gateway_config(&lab, side);
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, text.replacen('{', r#"{"user": "nobody", "#, 1)).unwrap();
        gateways.push(lab.spawn(
            ns,
            &[
                env!("CARGO_BIN_EXE_bitsgw"),
                "run",
                config.to_str().unwrap(),
            ],
        ));
    }
    for side in ["a", "b"] {
        wait_for(&gateway_socket(&lab, side));
    }
    let (uid, gid) = nobody();
    let no_caps = "0000000000000000";
    for &g in &gateways {
        let pid = lab.children[g].id();
        // Threads start after the drop; wait for them to be there.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut tasks = Vec::new();
        while tasks.len() < 3 && Instant::now() < deadline {
            tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(tasks.len() >= 3, "{pid}: threads {tasks:?}");
        for task in &tasks {
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            let name = status_field(&status, "Name");
            assert_eq!(status_field(&status, "Uid"), [&*uid; 4].join(" "), "{name}");
            assert_eq!(status_field(&status, "Gid"), [&*gid; 4].join(" "), "{name}");
            assert_eq!(status_field(&status, "Groups"), gid, "{name}");
            for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                assert_eq!(status_field(&status, set), no_caps, "{name} {set}");
            }
            assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{name}");
        }
    }

    let ping = lab.try_exec(
        "hA",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.20"],
    );
    assert!(
        ping.status.success(),
        "ping through gateways running as nobody: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let sock_a = gateway_socket(&lab, "a");
    let show = bitsgw(&[
        "show",
        "counters",
        "--json",
        "--socket",
        sock_a.to_str().unwrap(),
    ]);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let counters: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    for what in ["outbound_protected", "inbound_decrypted"] {
        assert!(
            counters["ipsec"][what].as_u64().unwrap_or(0) >= 3,
            "{what}: {counters}"
        );
    }
    let reload = bitsgw(&["ctl", "reload", "--socket", sock_a.to_str().unwrap()]);
    assert!(
        reload.status.success(),
        "reload as nobody: {}{}",
        String::from_utf8_lossy(&reload.stdout),
        String::from_utf8_lossy(&reload.stderr)
    );
    for g in gateways {
        let (ok, _, err) = lab.terminate(g);
        assert!(ok, "bitsgw run as nobody did not stop cleanly: {err}");
    }
}
