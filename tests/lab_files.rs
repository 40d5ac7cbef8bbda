//! What the running appliance promises about its process, its files and
//! its interfaces, checked from outside in network namespaces: it is not
//! dumpable (a root process without CAP_SYS_PTRACE can not read its
//! memory through `/proc/PID/mem`), a second appliance on the same interfaces is
//! refused while the same names in another namespace are not, traces are
//! private and flushed while it runs (a SIGKILLed appliance leaves
//! readable captures), and a deleted interface stops it with an error
//! naming the interface, or (`"on_link_loss": "wait"`) is waited for
//! without spinning and used again when it returns.
//!
//! Needs root, iproute2, iputils-ping and setpriv (util-linux).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{bitsgw, must, sh, wait_for, Lab, LockFiles};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// An inline gateway on `host` and `wan` with its control socket `sock`.
fn config(lab: &Lab, name: &str, sock: &Path, extra: &str) -> PathBuf {
    let policy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/site-to-site-a.json");
    let path = lab.dir.join(format!("{name}.json"));
    std::fs::write(
        &path,
        format!(
            r#"{{"role": "gateway", "policy": "{}",
  "ports": {{"host": {{"type": "af_packet", "interface": "host"}}, "network": {{"type": "af_packet", "interface": "wan"}}}},
  {extra}"state_dir": "{name}-state", "control_socket": "{}"}}"#,
            policy.display(),
            sock.display()
        ),
    )
    .unwrap();
    path
}

/// `h` (eth0, 192.0.2.10) -- `g` (host | wan) -- `n` (eth0); `h` sends
/// to 192.0.2.1 at a fixed MAC, so its frames need no answer to leave.
fn build(lab: &Lab) {
    lab.link("h", "eth0", "g", "host");
    lab.link("g", "wan", "n", "eth0");
    lab.up("h", &["eth0"], false);
    lab.up("g", &["host", "wan"], false);
    lab.up("n", &["eth0"], false);
    address_host(lab);
}

fn address_host(lab: &Lab) {
    lab.exec("h", &["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    lab.exec(
        "h",
        &[
            "ip",
            "neigh",
            "replace",
            "192.0.2.1",
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            "eth0",
        ],
    );
}

/// A few pings from `h` (unanswered; what matters is that frames arrive).
fn some_frames(lab: &Lab) {
    let _ = lab.try_exec(
        "h",
        &["ping", "-c", "5", "-i", "0.2", "-W", "1", "192.0.2.1"],
    );
}

/// Waits at most `limit` for child `index` to exit.
fn wait_exit(lab: &mut Lab, index: usize, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = lab.children[index].try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr_of(lab: &mut Lab, index: usize) -> String {
    let mut err = String::new();
    if let Some(mut e) = lab.children[index].stderr.take() {
        e.read_to_string(&mut err).unwrap();
    }
    err
}

/// The counters of a running appliance (`show counters --json`).
fn counters(sock: &Path) -> serde_json::Value {
    let o = bitsgw(&[
        "show",
        "counters",
        "--json",
        "--socket",
        sock.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// CPU time (user + system, in clock ticks) of process `pid`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces: fields count from after its ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// `setpriv` arguments that run a command as root without
/// CAP_SYS_PTRACE.
const NO_PTRACE: [&str; 3] = [
    "setpriv",
    "--inh-caps=-sys_ptrace",
    "--bounding-set=-sys_ptrace",
];

/// Reads 16 octets of process `pid`'s first mapping through
/// `/proc/PID/mem`, as root without CAP_SYS_PTRACE.
fn read_memory(pid: u32) -> std::process::Output {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let start = u64::from_str_radix(maps.split('-').next().unwrap(), 16).unwrap();
    let mut args = NO_PTRACE.to_vec();
    let (input, skip) = (format!("if=/proc/{pid}/mem"), format!("skip={start}"));
    args.extend_from_slice(&[
        "dd",
        &input,
        "of=/dev/null",
        "bs=16",
        "count=1",
        "iflag=skip_bytes",
        &skip,
        "status=none",
    ]);
    sh(&args)
}

#[test]
fn the_appliance_is_undumpable_alone_on_its_interfaces_and_flushes_private_traces() {
    let mut lab = Lab::new("fp", &["h", "g", "n", "g2"]);
    let _locks = LockFiles::of(&lab, &["g", "g2"]);
    build(&lab);
    let sock = lab.dir.join("gw.sock");
    let cfg = config(&lab, "gw", &sock, "");
    let trace = lab.dir.join("trace");
    let mut args = NO_PTRACE.to_vec();
    args.extend_from_slice(&[
        env!("CARGO_BIN_EXE_bitsgw"),
        "run",
        cfg.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let gw = lab.spawn("g", &args);
    wait_for(&sock);
    let pid = lab.children[gw].id();

    // Not dumpable: a root process without CAP_SYS_PTRACE can not read
    // its memory, though it can read that of an ordinary process run the
    // same way. (Both run without CAP_SYS_PTRACE too, so the reader's
    // capabilities are a superset of theirs and only dumpability decides;
    // see ptrace(2), "Ptrace access mode checking".)
    let sleeper = Command::new(NO_PTRACE[0])
        .args(&NO_PTRACE[1..])
        .args(["sleep", "60"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    lab.children.push(sleeper);
    let sleeper_pid = lab.children.last().unwrap().id();
    std::thread::sleep(Duration::from_millis(200));
    let control = read_memory(sleeper_pid);
    assert!(
        control.status.success(),
        "the check itself does not work here: {}",
        String::from_utf8_lossy(&control.stderr)
    );
    let appliance = read_memory(pid);
    assert!(
        !appliance.status.success(),
        "the appliance's memory is readable"
    );
    assert!(
        String::from_utf8_lossy(&appliance.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&appliance.stderr)
    );

    // A second appliance on the same interfaces is refused, naming the
    // interface and the holder.
    let sock2 = lab.dir.join("gw2.sock");
    let cfg2 = config(&lab, "gw2", &sock2, "");
    let second = lab.try_exec(
        "g",
        &[
            "timeout",
            "20",
            env!("CARGO_BIN_EXE_bitsgw"),
            "run",
            cfg2.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second appliance ran: {err}");
    assert!(
        err.contains("interface host is already in use") && err.contains(&format!("PID {pid}")),
        "{err}"
    );
    // The same interface names in another namespace are other interfaces.
    lab.exec(
        "g2",
        &[
            "ip", "link", "add", "host", "type", "veth", "peer", "name", "wan",
        ],
    );
    lab.up("g2", &["host", "wan"], false);
    let sock3 = lab.dir.join("gw3.sock");
    let cfg3 = config(&lab, "gw3", &sock3, "");
    let other = lab.spawn(
        "g2",
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", cfg3.to_str().unwrap()],
    );
    wait_for(&sock3);
    let (ok, _, err) = lab.terminate(other);
    assert!(ok, "{err}");

    // Traces: a private directory of private files, flushed while the
    // appliance runs, so a SIGKILL leaves captures that parse.
    some_frames(&lab);
    std::thread::sleep(Duration::from_millis(1500));
    must(&["kill", "-KILL", &pid.to_string()]);
    assert!(wait_exit(&mut lab, gw, Duration::from_secs(10)).is_some());
    assert_eq!(
        std::fs::metadata(&trace).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for name in ["host.pcap", "after-ipsec.pcap", "wire.pcap"] {
        let meta = std::fs::metadata(trace.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
    }
    let mut r = bitsgw_io::pcap::PcapReader::open(&trace.join("host.pcap")).unwrap();
    let mut frames = 0;
    while r.next_packet().unwrap().is_some() {
        frames += 1;
    }
    assert!(
        frames >= 5,
        "the killed appliance's host capture has {frames} frames"
    );
}

#[test]
fn a_deleted_interface_stops_the_appliance_or_is_waited_for() {
    let mut lab = Lab::new("fl", &["h", "g", "n"]);
    let _locks = LockFiles::of(&lab, &["g"]);
    build(&lab);

    // The default: exit, non-zero, naming the interface.
    let sock = lab.dir.join("exit.sock");
    let cfg = config(&lab, "exit", &sock, "");
    let gw = lab.spawn(
        "g",
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", cfg.to_str().unwrap()],
    );
    wait_for(&sock);
    lab.exec("g", &["ip", "link", "del", "host"]);
    let status = wait_exit(&mut lab, gw, Duration::from_secs(5))
        .expect("the appliance kept running without its interface");
    let err = stderr_of(&mut lab, gw);
    assert!(!status.success(), "{err}");
    assert!(err.contains("port host: the interface is gone"), "{err}");

    // "wait": the loss is logged and counted, the process sleeps, and the
    // interface is used again when it returns.
    lab.link("h", "eth0", "g", "host");
    lab.up("h", &["eth0"], false);
    lab.up("g", &["host"], false);
    address_host(&lab);
    let sock = lab.dir.join("wait.sock");
    // As an unprivileged user: binding the open packet socket to the
    // returning interface needs no capability.
    let cfg = config(
        &lab,
        "wait",
        &sock,
        r#""on_link_loss": "wait", "user": "nobody", "#,
    );
    let gw = lab.spawn(
        "g",
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", cfg.to_str().unwrap()],
    );
    wait_for(&sock);
    let pid = lab.children[gw].id();
    lab.exec("g", &["ip", "link", "del", "host"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters(&sock)["link_losses"] != 1 {
        assert!(Instant::now() < deadline, "the loss was never counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    // A receive thread spinning would use about 300 ticks in 3 s.
    assert!(used < 60, "{used} ticks of CPU in 3 s while waiting");
    assert!(wait_exit(&mut lab, gw, Duration::ZERO).is_none());

    lab.link("h", "eth0", "g", "host");
    lab.up("h", &["eth0"], false);
    lab.up("g", &["host"], false);
    address_host(&lab);
    let rx = |sock: &Path| {
        counters(sock)["ports"]["host"]["rx_frames"]
            .as_u64()
            .unwrap()
    };
    let at_return = rx(&sock);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx(&sock) <= at_return {
        assert!(
            Instant::now() < deadline,
            "no frame received after the interface returned"
        );
        some_frames(&lab);
    }
    let (ok, out, err) = lab.terminate(gw);
    assert!(ok, "{err}");
    assert!(out.contains("interfaces lost 1"), "{out}");
    assert!(err.contains("the interface is gone"), "{err}");
    assert!(err.contains("the interface is back"), "{err}");
}
