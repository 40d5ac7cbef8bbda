//! The appliance's own addresses: a host, a bitsgw gateway inline in front
//! of it (veth pairs, AF_PACKET ports, two workers) and a router, each in
//! its own network namespace. The gateway has 192.0.2.2 on its host side
//! and 192.0.2.3 and 2001:db8::3 on its network side: the host pings the
//! host-side address, the router pings the network-side ones (ARP, NDP and
//! echo answered by the gateway's smoltcp stack), with no loss. The router
//! can not reach the host-side address, and TCP to the network-side one is
//! refused and counted.
//!
//! Needs root (CI runs as root), iproute2, iputils-ping and ethtool
//! (`scripts/setup-test-deps.sh`). Everything it creates it removes, also
//! when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn must(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Lab {
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn try_exec(&self, ns: &str, args: &[&str]) -> Output {
        let ns = self.ns(ns);
        let mut full = vec!["ip", "netns", "exec", &ns];
        full.extend_from_slice(args);
        sh(&full)
    }

    fn exec(&self, ns: &str, args: &[&str]) -> String {
        let out = self.try_exec(ns, args);
        assert!(
            out.status.success(),
            "{ns}: {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn spawn(&mut self, ns: &str, args: &[&str]) -> usize {
        let ns = self.ns(ns);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }
}

fn up(lab: &Lab, ns: &str, devs: &[&str], ipv6: bool) {
    let v6 = if ipv6 { "0" } else { "1" };
    lab.exec(
        ns,
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.all.disable_ipv6={v6}"),
        ],
    );
    lab.exec(ns, &["ip", "link", "set", "lo", "up"]);
    for d in devs {
        if ipv6 {
            lab.exec(
                ns,
                &[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{d}.disable_ipv6=0"),
                ],
            );
        }
        lab.exec(ns, &["ip", "link", "set", d, "up"]);
        let _ = lab.try_exec(
            ns,
            &[
                "ethtool", "-K", d, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
            ],
        );
    }
}

fn build(lab: &Lab) {
    for n in ["h", "g", "r"] {
        must(&["ip", "netns", "add", &lab.ns(n)]);
    }
    let link = |from: &str, a: &str, to: &str, b: &str| {
        let peer = lab.ns(to);
        lab.exec(
            from,
            &[
                "ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", &peer,
            ],
        );
    };
    link("h", "eth0", "g", "host");
    link("g", "wan", "r", "ra");
    // The gateway's kernel has no addresses: its own stack is bitsgw's.
    up(lab, "h", &["eth0"], false);
    up(lab, "g", &["host", "wan"], false);
    up(lab, "r", &["ra"], true);
    lab.exec("h", &["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    lab.exec("r", &["ip", "addr", "add", "192.0.2.1/24", "dev", "ra"]);
    lab.exec(
        "r",
        &["ip", "addr", "add", "2001:db8::1/64", "dev", "ra", "nodad"],
    );
}

fn config(lab: &Lab) -> PathBuf {
    let policy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/site-to-site-a.json");
    let path = lab.dir.join("gw.json");
    let text = format!(
        r#"{{"role": "gateway", "policy": "{}",
  "ports": {{"host": {{"type": "af_packet", "interface": "host"}}, "network": {{"type": "af_packet", "interface": "wan"}}}},
  "addresses": {{"host": ["192.0.2.2/24"], "network": ["192.0.2.3/24", "2001:db8::3/64"]}},
  "workers": 2, "control_socket": "{}"}}"#,
        policy.display(),
        socket(lab).display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn socket(lab: &Lab) -> PathBuf {
    lab.dir.join("gw.sock")
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ping(lab: &Lab, ns: &str, dst: &str) -> Output {
    lab.try_exec(ns, &["ping", "-c", "5", "-i", "0.2", "-W", "2", dst])
}

fn assert_no_loss(out: &Output, what: &str) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" 0% packet loss"),
        "{what}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_gateway_answers_pings_to_its_own_addresses() {
    assert!(
        is_root(),
        "this test needs root (network namespaces); CI runs as root"
    );
    let prefix = format!("bge{}-", std::process::id());
    let dir = std::env::temp_dir().join(format!("bitsgw-lab-endpoint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = Lab {
        namespaces: ["h", "g", "r"]
            .iter()
            .map(|n| format!("{prefix}{n}"))
            .collect(),
        prefix,
        children: Vec::new(),
        dir,
    };
    build(&lab);
    let cfg = config(&lab);
    let gw = lab.spawn(
        "g",
        &[env!("CARGO_BIN_EXE_bitsgw"), "run", cfg.to_str().unwrap()],
    );
    wait_for(&socket(&lab));

    assert_no_loss(&ping(&lab, "h", "192.0.2.2"), "host -> host-side address");
    assert_no_loss(&ping(&lab, "r", "192.0.2.3"), "router -> network-side IPv4");
    assert_no_loss(
        &ping(&lab, "r", "2001:db8::3"),
        "router -> network-side IPv6",
    );
    // The host-side address is not reachable from the network.
    let out = lab.try_exec(
        "r",
        &["ping", "-c", "2", "-i", "0.2", "-W", "1", "192.0.2.2"],
    );
    assert!(
        !out.status.success(),
        "the network reached the host-side address"
    );
    // No services on the network side: TCP is dropped, not answered.
    let tcp = lab.try_exec(
        "r",
        &["timeout", "2", "bash", "-c", "echo > /dev/tcp/192.0.2.3/22"],
    );
    assert!(!tcp.status.success());

    let sock = socket(&lab);
    let counters = Command::new(env!("CARGO_BIN_EXE_bitsgw"))
        .args(["show", "counters", "--json", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    let c: serde_json::Value = serde_json::from_slice(&counters.stdout).unwrap();
    // 15 echo requests, at least one ARP or NDP exchange per peer.
    assert!(c["local_delivered"].as_u64().unwrap() >= 17, "{c}");
    assert!(c["drops"]["local_refused"].as_u64().unwrap() >= 1, "{c}");

    let pid = lab.children[gw].id().to_string();
    must(&["kill", "-TERM", &pid]);
    let child = &mut lab.children[gw];
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "gateway did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "gateway exited with {status}: {log}");
}

/// Whether we run as root, read from /proc.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
