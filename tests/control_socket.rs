//! The control socket of a running appliance (issue 16): who may use it,
//! what may stand at its path, clients that are slow, silent, many or
//! huge, and what `ctl reload` and `ctl remove-sa` answer.
//!
//! The appliance runs on TUN ports in a network namespace of its own (root
//! needed, as in CI); no packets are sent. The configuration tests run
//! anywhere. Everything a test creates it removes, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bitsgw, wait_for, Lab};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// SIGTERM must end the appliance within a second; this bound only tells
/// "exits" from "held back by a client" (which took 33 to 40 s).
const STOPS_WITHIN: Duration = Duration::from_secs(5);

fn site_a_policy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/site-to-site-a.json")
}

/// An appliance configuration in the lab folder; `extra` is more fields.
fn config(dir: &Path, policy: &Path, socket: &str, extra: &str) -> PathBuf {
    config_on(dir, policy, socket, extra, "0")
}

/// [`config`] on the TUN ports `h<tag>` and `n<tag>`.
fn config_on(dir: &Path, policy: &Path, socket: &str, extra: &str, tag: &str) -> PathBuf {
    let path = dir.join(format!("gw{tag}.json"));
    std::fs::write(
        &path,
        format!(
            r#"{{"role": "gateway", "policy": "{}", "ports": {{"host": {{"type": "tun", "name": "h{tag}"}}, "network": {{"type": "tun", "name": "n{tag}"}}}}, "workers": 2, "state_dir": "state{tag}", "control_socket": {}{extra}}}"#,
            policy.display(),
            serde_json::Value::from(socket)
        ),
    )
    .unwrap();
    path
}

/// Starts the appliance in namespace "g" under `umask`.
fn start(lab: &mut Lab, cfg: &Path, umask: &str) -> usize {
    let script = format!("umask {umask} && exec \"$0\" run \"$1\"");
    lab.spawn(
        "g",
        &[
            "sh",
            "-c",
            &script,
            env!("CARGO_BIN_EXE_bitsgw"),
            cfg.to_str().unwrap(),
        ],
    )
}

/// Waits for child `index` to exit by itself; its status and stderr.
fn exited(lab: &mut Lab, index: usize) -> (bool, String) {
    let child = &mut lab.children[index];
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the appliance did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), err)
}

fn cli(args: &[&str], socket: &Path) -> Output {
    let mut all = args.to_vec();
    all.extend(["--socket", socket.to_str().unwrap()]);
    bitsgw(&all)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Whether user nobody, with `groups`, can connect to `socket`.
fn nobody_connects(socket: &Path, groups: &str) -> bool {
    let mut args = vec!["setpriv", "--reuid=65534", "--regid=65534"];
    let g = format!("--groups={groups}");
    args.push(if groups.is_empty() {
        "--clear-groups"
    } else {
        &g
    });
    args.extend([
        "/usr/bin/python3",
        "-c",
        "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])",
        socket.to_str().unwrap(),
    ]);
    common::sh(&args).status.success()
}

/// Under umask 000 the socket was 0777 in a 0777 directory, and anyone
/// read counters and removed SAs.
#[test]
fn the_socket_is_private_whatever_the_umask() {
    let mut lab = Lab::new("cu", &["g"]);
    let sock = lab.dir.join("run/bitsgw/gw.sock");
    let cfg = config(&lab.dir, &site_a_policy(), sock.to_str().unwrap(), "");
    let gw = start(&mut lab, &cfg, "000");
    wait_for(&sock);
    assert!(std::fs::symlink_metadata(&sock)
        .unwrap()
        .file_type()
        .is_socket());
    assert_eq!(mode(&sock), 0o600);
    assert_eq!(mode(&lab.dir.join("run/bitsgw")), 0o700);
    assert_eq!(mode(&lab.dir.join("run")), 0o700);
    assert!(!nobody_connects(&sock, ""));
    let out = cli(&["show", "counters"], &sock);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (ok, _, err) = lab.terminate(gw);
    assert!(ok, "{err}");
    assert!(!sock.exists(), "the socket stays after the appliance");
}

/// With a group the socket is 0660 and its new directory 0750, both the
/// group's: its members connect, others do not.
#[test]
fn a_socket_group_may_connect_and_no_one_else() {
    let mut lab = Lab::new("cg", &["g"]);
    let sock = lab.dir.join("grp/gw.sock");
    let cfg = config(
        &lab.dir,
        &site_a_policy(),
        sock.to_str().unwrap(),
        r#", "control_socket_group": 4242"#,
    );
    let gw = start(&mut lab, &cfg, "000");
    wait_for(&sock);
    let dir = lab.dir.join("grp");
    assert_eq!(mode(&sock), 0o660);
    assert_eq!(mode(&dir), 0o750);
    assert_eq!(std::fs::metadata(&sock).unwrap().gid(), 4242);
    assert_eq!(std::fs::metadata(&dir).unwrap().gid(), 4242);
    assert!(nobody_connects(&sock, "4242"));
    assert!(!nobody_connects(&sock, ""));
    let (ok, _, err) = lab.terminate(gw);
    assert!(ok, "{err}");
}

/// `""` bound an abstract socket that anyone could use; `@name` and a
/// leading NUL are abstract names too. An unknown group is refused.
#[test]
fn empty_abstract_and_bad_group_settings_are_refused() {
    let dir = std::env::temp_dir().join(format!("bitsgw-ctl-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let long = format!("/run/{}.sock", "b".repeat(120));
    let cases = [
        ("", "", "control_socket", "is empty"),
        ("@bitsgw", "", "control_socket", "abstract"),
        ("\u{0}bitsgw", "", "control_socket", "abstract"),
        ("/run/bitsgw/", "", "control_socket", "directory"),
        (&long, "", "control_socket", "at most 107"),
        (
            "/run/bitsgw/x.sock",
            r#", "control_socket_group": "no-such-group-bitsgw""#,
            "control_socket_group",
            "no group",
        ),
        (
            "/run/bitsgw/x.sock",
            r#", "control_socket_group": true"#,
            "control_socket_group",
            "group name or a group id",
        ),
    ];
    let mut failures = Vec::new();
    for (socket, extra, field, problem) in cases {
        let cfg = config(&dir, &site_a_policy(), socket, extra);
        let out = bitsgw(&["check", cfg.to_str().unwrap()]);
        let err = text(&out.stderr);
        let named = format!("{}: appliance: field \"{field}\"", cfg.display());
        if out.status.code() != Some(2) || !err.contains(&named) || !err.contains(problem) {
            failures.push(format!("{socket:?} {extra}: {:?} {err}", out.status));
        }
    }
    // A group by name is looked up.
    let cfg = config(
        &dir,
        &site_a_policy(),
        "/run/bitsgw/x.sock",
        r#", "control_socket_group": "root""#,
    );
    let out = bitsgw(&["check", "--json", cfg.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["appliance"]["control_socket_group"], 0, "{v}");
}

/// A regular file at the socket's path was deleted. Whatever is there and
/// is not a stale socket of ours is refused and left as it was; a stale
/// socket is replaced.
#[test]
fn only_a_stale_socket_at_the_path_is_replaced() {
    let mut lab = Lab::new("cp", &["g"]);
    let file = lab.dir.join("file.sock");
    std::fs::write(&file, "keep me").unwrap();
    let target = lab.dir.join("target.txt");
    std::fs::write(&target, "keep me too").unwrap();
    let link = lab.dir.join("link.sock");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let folder = lab.dir.join("folder.sock");
    std::fs::create_dir(&folder).unwrap();
    for (path, what) in [
        (&file, "a regular file"),
        (&link, "a symbolic link"),
        (&folder, "a directory"),
    ] {
        let cfg = config(&lab.dir, &site_a_policy(), path.to_str().unwrap(), "");
        let gw = start(&mut lab, &cfg, "022");
        let (ok, err) = exited(&mut lab, gw);
        assert!(!ok, "started over {what}");
        assert!(err.contains(what) && err.contains("left in place"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    assert_eq!(std::fs::read_to_string(&link).unwrap(), "keep me too");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(folder.is_dir());

    // A socket nobody listens on any more (an appliance that was killed).
    let stale = lab.dir.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let cfg = config(&lab.dir, &site_a_policy(), stale.to_str().unwrap(), "");
    let gw = start(&mut lab, &cfg, "022");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cli(&["show", "counters"], &stale).status.success() {
        assert!(Instant::now() < deadline, "never answered on {stale:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(mode(&stale), 0o600);
    // A second appliance on the same path finds the first one listening.
    let cfg = config_on(&lab.dir, &site_a_policy(), stale.to_str().unwrap(), "", "1");
    let second = start(&mut lab, &cfg, "022");
    let (ok, err) = exited(&mut lab, second);
    assert!(
        !ok && err.contains("another appliance is listening"),
        "{err}"
    );
    let (ok, _, err) = lab.terminate(gw);
    assert!(ok, "{err}");
}

/// Starts an appliance with the site-to-site policy; its socket.
fn running(lab: &mut Lab, policy: &Path) -> (usize, PathBuf) {
    let sock = lab.dir.join("gw.sock");
    let cfg = config(&lab.dir, policy, sock.to_str().unwrap(), "");
    let gw = start(lab, &cfg, "022");
    wait_for(&sock);
    (gw, sock)
}

/// A client sending one byte a second without a newline held SIGTERM back
/// for 40 s (and every other client).
#[test]
fn a_byte_a_second_client_holds_nothing_back() {
    let mut lab = Lab::new("cs", &["g"]);
    let (gw, sock) = running(&mut lab, &site_a_policy());
    let stop = Arc::new(AtomicBool::new(false));
    let mut slow = UnixStream::connect(&sock).unwrap();
    let slow_stop = Arc::clone(&stop);
    let dribble = std::thread::spawn(move || {
        while !slow_stop.load(Ordering::SeqCst) {
            if slow.write_all(b" ").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let out = cli(&["show", "counters"], &sock);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (ok, _, err) = lab.terminate_within(gw, STOPS_WITHIN);
    stop.store(true, Ordering::SeqCst);
    dribble.join().unwrap();
    assert!(ok, "{err}");
}

/// A policy with `n` SAs (for a large `show`).
fn many_sas(n: usize) -> String {
    let (mut spd, mut sad) = (Vec::new(), Vec::new());
    for i in 0..n {
        spd.push(format!(
            r#"{{"name": "e{i}", "local": "2001:db8:a::{i:x}", "remote": "2001:db8:b::1", "action": "protect", "sa": "s{i}"}}"#
        ));
        sad.push(format!(
            r#"{{"name": "s{i}", "direction": "outbound", "spi": {}, "mode": "tunnel", "tunnel": {{"local": "2001:db8:ffff::a", "remote": "2001:db8:ffff::b"}}, "transform": "aes-cbc-128-hmac-sha256", "enc_key": "0x{:032x}", "auth_key": "0x{:064x}"}}"#,
            0x1000 + i,
            i + 1,
            i + 1
        ));
    }
    format!(
        r#"{{"spd": {{"outbound": [{}], "inbound": []}}, "sad": [{}]}}"#,
        spd.join(","),
        sad.join(",")
    )
}

/// A large `show` that its client never read blocked the main thread
/// (SIGTERM took 33 s with 2,000 SAs).
#[test]
fn a_client_that_never_reads_a_large_show_holds_nothing_back() {
    let mut lab = Lab::new("cl", &["g"]);
    let policy = lab.dir.join("many.json");
    std::fs::write(&policy, many_sas(2000)).unwrap();
    let (gw, sock) = running(&mut lab, &policy);
    // The answer is more than the socket buffers: unread, it blocks its
    // writer.
    let mut whole = UnixStream::connect(&sock).unwrap();
    whole.write_all(b"{\"show\": \"all\"}\n").unwrap();
    let mut answer = Vec::new();
    whole.read_to_end(&mut answer).unwrap();
    let buffer: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_default")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(answer.len() > 2 * buffer, "{} octets", answer.len());
    let mut lazy = UnixStream::connect(&sock).unwrap();
    lazy.write_all(b"{\"show\": \"all\"}\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = cli(&["show", "counters"], &sock);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (ok, _, err) = lab.terminate_within(gw, STOPS_WITHIN);
    drop(lazy);
    assert!(ok, "{err}");
}

/// Each half-open connection cost 2 s of the main thread, and the
/// operator's `show` then failed.
#[test]
fn many_silent_clients_do_not_starve_the_operator() {
    let mut lab = Lab::new("ch", &["g"]);
    let (gw, sock) = running(&mut lab, &site_a_policy());
    let silent: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let out = cli(&["show", "counters"], &sock);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("outbound_protected"));
    // A request ended by closing instead of a newline is answered too.
    let mut terse = UnixStream::connect(&sock).unwrap();
    terse.write_all(br#"{"show": "all"}"#).unwrap();
    terse.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    terse.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("\"counters\""), "{answer}");
    // The silent ones beyond the limit gave their places up.
    let closed = silent
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            matches!((&**s).read(&mut [0u8; 64]), Ok(0))
        })
        .count();
    assert!(closed >= 60, "only {closed} of 100 silent clients closed");
    // The newest kept its place, until its time to send a request ran out.
    let newest = silent.last().unwrap();
    newest
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    BufReader::new(newest).read_line(&mut answer).unwrap();
    assert!(
        answer.contains("no complete request line within 5 s"),
        "{answer}"
    );
    let (ok, _, err) = lab.terminate_within(gw, STOPS_WITHIN);
    drop(silent);
    assert!(ok, "{err}");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A 500 MB line grew the process by 512 MB.
#[test]
fn a_huge_request_line_is_refused_in_bounded_memory() {
    let mut lab = Lab::new("cb", &["g"]);
    let (gw, sock) = running(&mut lab, &site_a_policy());
    let pid = lab.children[gw].id();
    let before = rss_kib(pid);
    let client = UnixStream::connect(&sock).unwrap();
    let mut writer = client.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0usize;
        while sent < 300 << 20 && writer.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
    });
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    BufReader::new(&client).read_line(&mut answer).unwrap();
    flood.join().unwrap();
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["error"], "request longer than 65536 octets", "{v}");
    let after = rss_kib(pid);
    assert!(
        after < before + 64 * 1024,
        "resident memory grew from {before} to {after} KiB"
    );
    let out = cli(&["show", "counters"], &sock);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (ok, _, err) = lab.terminate_within(gw, STOPS_WITHIN);
    assert!(ok, "{err}");
}

/// Starts an appliance on a copy of the site-to-site policy, which the
/// test may change: the appliance, its socket, the copy and its text.
fn running_on_a_copy(lab: &mut Lab) -> (usize, PathBuf, PathBuf, String) {
    let policy = lab.dir.join("policy.json");
    let original = std::fs::read_to_string(site_a_policy()).unwrap();
    std::fs::write(&policy, &original).unwrap();
    let (gw, sock) = running(lab, &policy);
    (gw, sock, policy, original)
}

/// `ctl reload` succeeds and says `what` changed.
fn reload_says(sock: &Path, what: &str) {
    let out = cli(&["ctl", "reload"], sock);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(what), "{}", text(&out.stdout));
}

/// `ctl reload` said "reload requested" and exited 0 even when the reload
/// was refused; now it prints the outcome and fails on a refusal, which
/// changes nothing. SIGHUP logs the same outcome.
#[test]
fn ctl_reload_reports_the_outcome_and_a_refusal_changes_nothing() {
    let mut lab = Lab::new("cr", &["g"]);
    let (gw, sock, policy, original) = running_on_a_copy(&mut lab);
    reload_says(&sock, "4 SAs kept, 0 installed, 0 removed");
    let sp_before = text(&cli(&["show", "sp"], &sock).stdout);
    let sa_before = text(&cli(&["show", "sa"], &sock).stdout);

    // An SPD that names an SA the SAD does not have, and an SA on a UDP
    // encapsulation port the appliance does not receive on.
    let unknown_sa = original
        .replace(r#""sa": "a-to-b-v6""#, r#""sa": "nope""#)
        .replace(r#""name": "sites-v4-out""#, r#""name": "renamed-out""#);
    let new_port = original.replace(
        r#""name": "b-to-a-v4",
      "direction": "inbound","#,
        r#""name": "b-to-a-v4",
      "direction": "inbound", "udp_encap": {"local_port": 4501, "remote_port": 4500},"#,
    );
    assert_ne!(new_port, original);
    for (bad, why) in [(&unknown_sa, "nope"), (&new_port, "4501")] {
        std::fs::write(&policy, bad).unwrap();
        let out = cli(&["ctl", "reload"], &sock);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{}", text(&out.stdout));
        assert!(
            err.contains("reload refused, nothing changed") && err.contains(why),
            "{err}"
        );
        assert_eq!(text(&cli(&["show", "sp"], &sock).stdout), sp_before);
        assert_eq!(text(&cli(&["show", "sa"], &sock).stdout), sa_before);
    }
    let pid = lab.children[gw].id().to_string();
    common::must(&["kill", "-HUP", &pid]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(text(&cli(&["show", "sp"], &sock).stdout), sp_before);
    let (ok, _, log) = lab.terminate(gw);
    assert!(ok, "{log}");
    assert!(log.contains("reload refused, nothing changed"), "{log}");
}

/// Renaming an inbound SA while keeping its SPI left the new SPD without
/// the SA and `show sa` printing `esp ? ?`.
#[test]
fn reload_of_an_inbound_sa_renamed_with_its_spi_installs_it() {
    let mut lab = Lab::new("cn", &["g"]);
    let (gw, sock, policy, original) = running_on_a_copy(&mut lab);
    std::fs::write(&policy, original.replace("b-to-a-v4", "from-b-v4")).unwrap();
    reload_says(&sock, "3 SAs kept, 1 installed, 1 removed");
    let sa = text(&cli(&["show", "sa"], &sock).stdout);
    assert!(
        sa.contains(
            "from-b-v4: inbound spi 0x00003002 esp tunnel 203.0.113.1 -> 203.0.113.2 aes-gcm-128"
        ),
        "{sa}"
    );
    assert!(!sa.contains("b-to-a-v4") && !sa.contains('?'), "{sa}");
    // No backend configured: `auto`, resolved to what start measured.
    assert!(
        sa.contains("backend ring (auto)") || sa.contains("backend rustcrypto (auto)"),
        "{sa}"
    );
    let sp = text(&cli(&["show", "sp"], &sock).stdout);
    assert!(sp.contains("from-b-v4"), "{sp}");
    let (ok, _, log) = lab.terminate(gw);
    assert!(ok, "{log}");
}

/// `ctl remove-sa` of an unknown or already removed SA said "removed".
#[test]
fn remove_sa_fails_for_an_sa_that_is_not_installed() {
    let mut lab = Lab::new("cx", &["g"]);
    let (gw, sock) = running(&mut lab, &site_a_policy());
    let out = cli(&["ctl", "remove-sa", "a-to-b-v4"], &sock);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("removed"));
    let again = cli(&["ctl", "remove-sa", "a-to-b-v4"], &sock);
    assert!(!again.status.success(), "{}", text(&again.stdout));
    assert!(text(&again.stderr).contains("not installed"));
    let unknown = cli(&["ctl", "remove-sa", "no-such-sa"], &sock);
    assert!(!unknown.status.success(), "{}", text(&unknown.stdout));
    assert!(text(&unknown.stderr).contains("no SA named"));
    let (ok, _, log) = lab.terminate(gw);
    assert!(ok, "{log}");
}
